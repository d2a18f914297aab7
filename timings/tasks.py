"""Celery task: a thin wake-up. The samples table says what is new; the model learns it."""

from celery import shared_task

from .models import ModelTiming


@shared_task
def learn() -> int:
    """Fold the samples of predictions that ended into their models' timings. Runs every
    10 s from the scheduler; any number of copies may run at once (ModelTiming.learn_batch)."""
    return ModelTiming.learn()
