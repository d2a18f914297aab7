"""Receivers: outputs follow their predictions, and stored files follow their rows."""

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from predictions.models import Prediction
from predictions.signals import changed

from .models import Output, discard_unused


@receiver(changed, sender=Prediction)
def record_outputs(sender, prediction: Prediction, **kwargs) -> None:
    """New output URLs get their rows in the transaction that stored them, so none is missed;
    the wake-up after commit only saves the sweep's wait."""
    if Output.record(prediction):
        from .tasks import wake_archiver

        transaction.on_commit(wake_archiver)


@receiver(post_delete, sender=Output)
def delete_stored_files(sender, instance: Output, **kwargs) -> None:
    """A deleted output's files go too (also when its prediction is deleted), unless another
    output shares its SHA-256. Its prediction (if it stays) shows one output fewer."""
    Prediction.mark_changed([instance.prediction_id], instance.team_id)
    if instance.sha256:
        names = instance.stored_names()
        transaction.on_commit(lambda: discard_unused(instance.sha256, names))
