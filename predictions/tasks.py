"""Celery tasks: thin wake-ups. The database says what is due; the models do the work."""

import logging

from celery import shared_task
from django.conf import settings

from .client import shared_client
from .models import Prediction

log = logging.getLogger(__name__)


@shared_task
def dispatch_due() -> int:
    """Lease every prediction whose next step is due and queue that step.

    Runs every second from the scheduler, and right after a submit. A lost message, a dead worker
    or a lost broker only delays a step: its lease runs out and the next dispatch claims it again.
    """
    claimed = Prediction.claim_due(limit=settings.POLL_BATCH)
    for pk, claim in claimed:
        advance.delay(pk, claim)
    return len(claimed)


@shared_task
def advance(pk: int, claim: int) -> None:
    prediction = Prediction.take(pk, claim)
    if prediction is None:
        log.info("prediction %s: claim %s is stale, skipping", pk, claim)
        return
    prediction.advance(shared_client())


def wake_dispatcher() -> None:
    """Ask for a dispatch now; if the broker is down the scheduler's next tick does it."""
    try:
        dispatch_due.delay()
    except Exception:
        log.warning("could not reach the broker; the scheduler will dispatch", exc_info=True)
