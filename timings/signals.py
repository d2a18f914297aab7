"""Receiver: an ended prediction leaves a sample of its model's times."""

from django.dispatch import receiver

from predictions.models import Prediction
from predictions.signals import changed

from .models import TimingSample


@receiver(changed, sender=Prediction)
def record_sample(sender, prediction: Prediction, **kwargs) -> None:
    """In the transaction that ended it: one INSERT, nothing shared is updated or locked."""
    TimingSample.record(prediction)
