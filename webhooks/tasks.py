"""Celery tasks: thin wake-ups; the model does the work."""

from celery import shared_task

from .models import WebhookDelivery


@shared_task
def forget_old_deliveries() -> int:
    """Runs hourly from the scheduler."""
    return WebhookDelivery.forget_old()
