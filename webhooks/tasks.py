"""Celery tasks: thin wake-ups; the model does the work."""

import logging

from celery import shared_task

from .models import OutgoingWebhook, WebhookDelivery, WebhookSubscription

log = logging.getLogger(__name__)


@shared_task
def forget_old_deliveries() -> int:
    """Runs hourly from the scheduler."""
    return WebhookDelivery.forget_old()


@shared_task
def send_due() -> int:
    """Queue the webhooks that running predictions have reached, lease every webhook due and
    queue its attempt. Runs every second from the scheduler and right after new webhooks are
    queued; it also catches anything missed."""
    WebhookSubscription.check_open()
    claimed = OutgoingWebhook.claim_due()
    for pk, claim in claimed:
        send.delay(pk, claim)
    return len(claimed)


@shared_task
def send(pk: int, claim: int) -> None:
    webhook = OutgoingWebhook.take(pk, claim)
    if webhook is None:
        log.info("outgoing webhook %s: claim %s is stale, skipping", pk, claim)
        return
    webhook.send()


@shared_task
def forget_old_outgoing_webhooks() -> int:
    """Runs hourly from the scheduler."""
    return OutgoingWebhook.forget_old()


def wake_sender() -> None:
    """Ask for a send sweep now; if the broker is down the scheduler's next tick does it."""
    try:
        send_due.delay()
    except Exception as exc:
        # Expected while the broker is down: one line, not a traceback.
        log.warning("could not reach the broker (%r); the scheduler will send webhooks", exc)
