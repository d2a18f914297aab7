"""Receivers: a prediction created through the API with a webhook queues its events as it
changes, in the transaction that stores the change."""

import logging

from django.db import transaction
from django.dispatch import receiver

from predictions.models import Prediction
from predictions.signals import changed

from .models import WebhookSubscription

log = logging.getLogger(__name__)


@receiver(changed, sender=Prediction)
def queue_client_webhooks(sender, prediction: Prediction, **kwargs) -> None:
    """Queued with the change or not at all; the wake-up after commit only saves the sweep's
    wait. Polls that only bring progress send no `changed`: the sweep finds those
    (WebhookSubscription.check_open)."""
    subscription = WebhookSubscription.objects.filter(prediction=prediction).first()
    if subscription is None:
        return
    try:
        with transaction.atomic():
            queued = subscription.catch_up(prediction)
    except Exception:
        # A webhook that cannot be made must not undo the change it is about (the poller
        # would store it again and again): the sweep tries again, and the log says why.
        log.exception("prediction %s: could not queue its webhooks", prediction.pk)
        return
    if queued:
        from .tasks import wake_sender

        transaction.on_commit(wake_sender)
