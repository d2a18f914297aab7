"""Celery tasks: thin wake-ups. The database says which repricings are due; the model does them."""

import logging

from celery import shared_task

from .models import Repricing

log = logging.getLogger(__name__)


@shared_task
def reprice_due() -> int:
    """Lease every repricing that is due and queue it. Runs every few seconds from the
    scheduler, right after a price rule's commit, and when a repricing's turn ends before its
    work; it also catches anything missed (a lost message, a worker that died)."""
    claimed = Repricing.claim_due()
    for pk, claim in claimed:
        reprice.delay(pk, claim)
    return len(claimed)


@shared_task
def reprice(pk: int, claim: int) -> None:
    repricing = Repricing.take(pk, claim)
    if repricing is None:
        log.info("repricing %s: claim %s is stale, skipping", pk, claim)
        return
    if not repricing.run():
        # Its turn is over, not its work: the next sweep claims it again at once.
        wake_repricer()


def wake_repricer() -> None:
    """Ask for a repricing sweep now; if the broker is down the scheduler's next tick does it."""
    try:
        reprice_due.delay()
    except Exception as exc:
        # Expected while the broker is down: one line, not a traceback.
        log.warning("could not reach the broker (%r); the scheduler will reprice", exc)
