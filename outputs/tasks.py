"""Celery tasks: thin wake-ups. The database says which outputs are due; the model archives."""

import logging

from celery import shared_task
from django.conf import settings

from .models import Output

log = logging.getLogger(__name__)


@shared_task
def archive_due() -> int:
    """Lease every output due for archiving and queue its attempt. Runs every few seconds from
    the scheduler and right after new outputs appear; it also catches anything missed."""
    claimed = Output.claim_due(limit=settings.ARCHIVE_BATCH)
    for pk, claim in claimed:
        archive.delay(pk, claim)
    return len(claimed)


@shared_task
def archive(pk: int, claim: int) -> None:
    output = Output.take(pk, claim)
    if output is None:
        log.info("output %s: claim %s is stale, skipping", pk, claim)
        return
    output.archive()


def wake_archiver() -> None:
    """Ask for an archive sweep now; if the broker is down the scheduler's next tick does it."""
    try:
        archive_due.delay()
    except Exception as exc:
        # Expected while the broker is down: one line, not a traceback.
        log.warning("could not reach the broker (%r); the scheduler will archive", exc)
