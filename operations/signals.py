"""Receivers: a prediction's end is logged in one line with its ids and counted for /metrics once
its transaction commits; a create given up as "submit outcome unknown" is remembered with it. A
worker process stores its last counts as it shuts down."""

import logging
from functools import partial

from celery.signals import worker_process_shutdown, worker_shutdown
from django.db import connection, transaction
from django.dispatch import receiver

from predictions.models import Prediction, Status
from predictions.signals import changed

from . import tallies
from .models import UnknownOutcome

log = logging.getLogger(__name__)

# Ends an operator should look at; the others are the model's or the member's doing.
WORTH_A_WARNING = {Status.SUBMIT_UNKNOWN, Status.TIMED_OUT}


@receiver(changed, sender=Prediction)
def watch_ends(sender, prediction: Prediction, **kwargs) -> None:
    if prediction.is_running:
        return
    if prediction.status == Status.SUBMIT_UNKNOWN:
        UnknownOutcome.remember(prediction)
    transaction.on_commit(
        partial(
            ended,
            prediction.pk,
            prediction.provider,
            prediction.provider_id,
            prediction.status,
            prediction.error,
        )
    )


def ended(pk: int, provider: str, provider_id: str, status: str, error: str) -> None:
    tallies.ended(provider, status)
    level = logging.WARNING if status in WORTH_A_WARNING else logging.INFO
    log.log(
        level,
        "prediction %s: %s at %s%s%s",
        pk,
        status,
        provider,
        f" as {provider_id}" if provider_id else "",
        f": {' '.join(error.split())[:300]}" if error else "",
        extra={"prediction_id": pk, "provider": provider, "status": status},
    )


@worker_shutdown.connect
@worker_process_shutdown.connect
def store_counts(**kwargs) -> None:
    """A prefork child ends with os._exit(), past any atexit hook: its last counts go now, and
    the connection that took them is closed with it."""
    tallies.tallies().store()
    connection.close()
