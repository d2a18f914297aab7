"""Darkroom's own webhooks: what the API calls when a client creates a prediction with `webhook`.

As Replicate does, Darkroom then posts the prediction to the client's URL when it starts, as its
output and logs change (at most every 500 ms) and when it ends, for the events the client's
`webhook_events_filter` names (all by default), signed with the team's secret (Standard Webhooks,
as `signatures.py` checks providers' webhooks), and retried with backoff. What is due lives in
the database (`WebhookSubscription`, `OutgoingWebhook`); the sender (`sender.py`) refuses
private, loopback and link-local addresses unless WEBHOOKS_ALLOW_PRIVATE is on.
"""

from django.core.exceptions import ValidationError

from accounts.models import Team
from predictions.models import Prediction

from .models import EVENTS, SigningSecret, WebhookSubscription
from .sender import WebhookError, check_destination

MAX_URL_LENGTH = 2000


def subscribe(prediction: Prediction, url: str, events: list[str] | None, base_url: str) -> None:
    """Send `prediction`'s webhooks for `events` (None: all) to `url`, with bodies whose URLs
    are built on `base_url`. A ValidationError names the field at fault (`webhook` or
    `webhook_events_filter`) and says why."""
    save_subscription(prediction, url, checked_events(url, events), base_url)


def checked_events(url: str, events: list[str] | None) -> list[str]:
    """The events to send to `url`, in their order, once `url` and `events` are checked: a
    ValidationError as `subscribe` says. It may resolve `url`'s name: call it before a
    transaction, not in one."""
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        raise ValidationError(
            {"webhook": f"must be an http or https URL of at most {MAX_URL_LENGTH} characters."}
        )
    try:
        check_destination(url)
    except WebhookError as exc:
        raise ValidationError({"webhook": exc.message}) from None
    if events is None:
        return list(EVENTS)
    if not isinstance(events, list) or not all(event in EVENTS for event in events):
        choices = ", ".join(f'"{event}"' for event in EVENTS)
        raise ValidationError({"webhook_events_filter": f"must be a list drawn from {choices}."})
    return [event for event in EVENTS if event in events]


def save_subscription(prediction: Prediction, url: str, events: list[str], base_url: str) -> None:
    """Store a subscription whose `url` and `events` were checked (`checked_events`)."""
    WebhookSubscription.objects.update_or_create(
        prediction=prediction, defaults={"url": url, "events": events, "base_url": base_url}
    )


def signing_secret(team: Team) -> str:
    """The secret (`whsec_...`) that `team`'s webhooks are signed with, made on first use."""
    return SigningSecret.of(team.pk)
