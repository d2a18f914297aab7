"""Webhooks from providers: a prediction moves on when its provider says so, not at its next poll.
And Darkroom's own, to the clients of its API (`outgoing.py`, sent by `sender.py`).

`webhook_url()` lives here, free of models, so that predictions can ask for it when it sends a
create without importing this app's models.
"""

from typing import TYPE_CHECKING

from django.conf import settings
from django.urls import reverse

if TYPE_CHECKING:
    from predictions.models import Prediction


def sends_webhooks(provider: str) -> bool:
    """Whether the provider named `provider` sends webhooks (settings.PROVIDERS says)."""
    return bool(settings.PROVIDERS.get(provider, {}).get("webhooks"))


def webhook_url(prediction: "Prediction") -> str | None:
    """Where the provider should post `prediction`'s webhooks; None when this deployment has
    no public URL or the provider sends no webhooks."""
    if not settings.DARKROOM_PUBLIC_URL or not sends_webhooks(prediction.provider):
        return None
    return settings.DARKROOM_PUBLIC_URL + reverse("webhooks:prediction", args=[prediction.pk])
