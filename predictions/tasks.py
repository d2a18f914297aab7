"""Celery tasks: thin wake-ups. The database says what is due; the poller does the work."""

import logging

from celery import shared_task
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from .poller import open_poller, running_poller, stop_poller

log = logging.getLogger(__name__)


@shared_task
def dispatch_due() -> None:
    """Wake this worker process's poller (starting it if need be): something may be due.

    Sent after a submit; a lost message only delays a poll until the poller next looks by
    itself (a quarter of a second). One consumed while the worker shuts down starts nothing.
    """
    if poller := running_poller():
        poller.wake()


@worker_process_init.connect
def start_in_child(**kwargs) -> None:
    """Every prefork child polls."""
    open_poller()


@worker_init.connect
def start_in_worker(sender, **kwargs) -> None:
    """A worker without child processes (threads, solo) polls in its own process."""
    pool = sender.pool_cls  # a class, or its name
    if "prefork" not in (pool if isinstance(pool, str) else pool.__module__):
        open_poller()


@worker_shutdown.connect
@worker_process_shutdown.connect
def stop_in_worker(**kwargs) -> None:
    stop_poller(closing=True)


def wake_dispatcher() -> None:
    """Ask for a dispatch now; if the broker is down the poller finds the work by itself."""
    try:
        dispatch_due.delay()
    except Exception as exc:
        # Expected while the broker is down: one line, not a traceback.
        log.warning("could not reach the broker (%r); the poller will find the work", exc)
