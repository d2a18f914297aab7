import base64
import hashlib
import json
import logging
import random
import secrets
import time
from datetime import timedelta
from typing import Any

from cryptography.fernet import InvalidToken
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, models, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Team, fernet
from dashboard import leases
from predictions.models import Prediction, Status

from .signatures import sign

log = logging.getLogger(__name__)

# Longer than any provider keeps retrying one webhook.
KEPT_FOR = timedelta(days=1)


class WebhookDelivery(models.Model):
    """A webhook Darkroom applied, kept for a day so that a retried or duplicated delivery of
    it is applied once."""

    provider = models.CharField(max_length=20)
    webhook_id = models.CharField(max_length=200)
    # Indexed for deleting a prediction, which deletes its deliveries.
    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="+")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # forget_old(): received_at < a day ago.
            models.Index(fields=["received_at"], name="webhookdelivery_received_idx"),
        ]
        constraints = [
            # Also serves the duplicate check: the insert of a delivery seen before fails.
            models.UniqueConstraint(
                fields=["provider", "webhook_id"], name="webhookdelivery_unique_id"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} webhook {self.webhook_id}"

    @classmethod
    def receive(cls, pk: int, webhook_id: str, payload: dict[str, Any]) -> str:
        """Apply a verified webhook about prediction `pk` once, exactly as a poll's answer is
        applied. Returns "applied", "duplicate" (this webhook was applied before), "unknown"
        (no such prediction) or "not_about" (the payload is another prediction's)."""
        with transaction.atomic():
            # Locked, because the `start` webhook may race the create's answer: whichever comes
            # second sees the provider id the first one stored.
            prediction = Prediction.objects.select_for_update().filter(pk=pk).first()
            if prediction is None:
                return "unknown"
            if not is_about(prediction, payload):
                return "not_about"
            try:
                with transaction.atomic():
                    cls.objects.create(
                        provider=prediction.provider, webhook_id=webhook_id, prediction=prediction
                    )
            except IntegrityError:
                return "duplicate"
            prediction.apply_remote(payload)
        return "applied"

    @classmethod
    def forget_old(cls) -> int:
        """Delete the deliveries older than KEPT_FOR; how many there were."""
        deleted, _ = cls.objects.filter(received_at__lt=timezone.now() - KEPT_FOR).delete()
        return deleted


def is_about(prediction: Prediction, payload: dict[str, Any]) -> bool:
    """Whether a verified webhook's `payload` is `prediction` at the provider."""
    if prediction.provider_id:
        return payload["id"] == prediction.provider_id
    # Not yet known: the `start` webhook came before the create's answer was recorded. The
    # webhook went to this prediction's own URL, so it can only be this prediction's create,
    # unless the payload is plainly another one.
    return (
        prediction.status == Status.SUBMITTING
        and payload.get("model", prediction.model) == prediction.model
        and not Prediction.objects.filter(
            provider=prediction.provider, provider_id=payload["id"]
        ).exists()
    )


# --- Darkroom's own webhooks, to API clients -------------------------------------------------

# What a client may ask webhooks for (Replicate's `webhook_events_filter`), in the order they
# happen; without a filter, all of them.
EVENTS = ("start", "output", "logs", "completed")
# Replicate sends logs and output events at most this often.
PROGRESS_INTERVAL = timedelta(milliseconds=500)
# Seconds before each retry of a webhook the receiver did not take; after the last, it failed.
RETRY_DELAYS = (1, 5, 30, 120, 600, 1800, 3600)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
# How long a worker holds a webhook it sends: longer than one attempt can take (sender.py).
SEND_LEASE = 30.0
SEND_BATCH = 100


class WebhookSubscription(models.Model):
    """Where a prediction created through the API sends its webhooks, and what it has sent: each
    change goes out once per event kind."""

    prediction = models.OneToOneField(
        Prediction, on_delete=models.CASCADE, related_name="webhook_subscription"
    )
    url = models.TextField()
    # The events the client asked for, drawn from EVENTS.
    events = models.JSONField(default=list)
    # Where the client reached the API: the body's URLs are built on it.
    base_url = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    # What has been queued of each kind (the output and logs as a digest of what was sent), and
    # when the last logs or output event was.
    sent_start = models.BooleanField(default=False)
    sent_output = models.CharField(max_length=64, blank=True)
    sent_logs = models.CharField(max_length=64, blank=True)
    sent_completed = models.BooleanField(default=False)
    progress_sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # WebhookSubscription.check_open(): those whose prediction has not ended yet.
            models.Index(
                fields=["created_at"],
                condition=Q(sent_completed=False),
                name="subscription_open_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"Webhook of prediction {self.prediction_id} to {self.url}"

    @classmethod
    def check_open(cls) -> int:
        """Queue what the predictions still running have reached since their last webhooks:
        a poll that only brings progress (processing, more logs) tells no one, so the sweep
        looks. Returns how many webhooks were queued."""
        queued = 0
        for subscription in cls.objects.filter(sent_completed=False).select_related("prediction"):
            try:
                queued += subscription.catch_up(subscription.prediction)
            except Exception:
                # One prediction whose webhook cannot be made must not hold up the others'.
                log.exception(
                    "prediction %s: could not queue its webhooks", subscription.prediction_id
                )
        return queued

    def catch_up(self, prediction: Prediction) -> int:
        """Queue a webhook for each event `prediction` (as stored) has reached since the last
        ones, if the client asked for it; how many. Two workers catching up at once queue
        each event once: the marks of what was sent are compared and set in one update."""
        now = timezone.now()
        ended = not prediction.is_running
        marks = {name: getattr(self, name) for name in SENT_MARKS}
        reached = []
        if not self.sent_start and (
            prediction.status == Status.PROCESSING or (ended and prediction.started_at)
        ):
            marks["sent_start"] = True
            reached.append("start")
        # Logs and output at most every PROGRESS_INTERVAL; the end's own are never held back.
        last_progress = self.progress_sent_at
        held = not ended and last_progress is not None and now < last_progress + PROGRESS_INTERVAL
        output = digest(prediction.output) if prediction.output is not None else ""
        if output != self.sent_output and output and not held:
            marks["sent_output"] = output
            reached.append("output")
        logs = digest(prediction.logs) if prediction.logs else ""
        if logs != self.sent_logs and logs and not held and prediction.status == Status.PROCESSING:
            # Only while it runs: once it ended, the completed event carries the last logs.
            marks["sent_logs"] = logs
            reached.append("logs")
        if ended and not self.sent_completed:
            marks["sent_completed"] = True
            reached.append("completed")
        if not reached:
            return 0
        events = [event for event in reached if event in self.events]
        if {"output", "logs"} & set(events):
            marks["progress_sent_at"] = now
        with transaction.atomic():
            previous = {name: getattr(self, name) for name in SENT_MARKS}
            if not type(self).objects.filter(pk=self.pk, **previous).update(**marks):
                return 0  # another worker queued them
            for name, value in marks.items():
                setattr(self, name, value)
            if events:
                body = self.render(prediction)
                OutgoingWebhook.objects.bulk_create(
                    OutgoingWebhook(subscription=self, event=event, body=body) for event in events
                )
        return len(events)

    def render(self, prediction: Prediction) -> str:
        """The body of a webhook about `prediction`: the prediction as the API shows it."""
        from api.shapes import prediction_json  # the API is built on this app, not under it

        return json.dumps(prediction_json(prediction, self.base_url), cls=DjangoJSONEncoder)


# The fields catch_up() compares and sets.
SENT_MARKS = ("sent_start", "sent_output", "sent_logs", "sent_completed", "progress_sent_at")


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


def new_webhook_id() -> str:
    return f"msg_{secrets.token_hex(16)}"


class OutgoingWebhook(models.Model):
    """One event of a prediction, to be posted to its client's URL: pending until the receiver
    answers 2xx (delivered), retried with backoff, failed after MAX_ATTEMPTS or a refusal. The
    body is the prediction as it was at the event; every attempt sends the same bytes under the
    same `webhook-id`, signed anew with its own timestamp."""

    # Indexed (Django's own index on a foreign key): a subscription's webhooks, and deleting
    # them with their prediction.
    subscription = models.ForeignKey(
        WebhookSubscription, on_delete=models.CASCADE, related_name="webhooks"
    )
    event = models.CharField(max_length=10)
    webhook_id = models.CharField(max_length=40, default=new_webhook_id, editable=False)
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(
        max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    # When the next attempt is due; None once delivered or failed.
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    claims = models.PositiveIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    # The receiver's last HTTP status (None: no answer), and why the last attempt failed.
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [
            # OutgoingWebhook.claim_due(): next_attempt_at <= now among webhooks still to send.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(next_attempt_at__isnull=False),
                name="outgoingwebhook_due_idx",
            ),
            # forget_old(): created_at < a day ago.
            models.Index(fields=["created_at"], name="outgoingwebhook_created_idx"),
        ]

    # The claim a worker took this copy with (see take()); None outside workers.
    claim: int | None = None

    def __str__(self) -> str:
        return f"{self.event} webhook {self.webhook_id} ({self.state})"

    @classmethod
    def claim_due(cls, limit: int = SEND_BATCH) -> list[tuple[int, int]]:
        """Lease due webhooks to one worker; (pk, claim) pairs for `take()`."""
        return leases.claim_due(cls.objects.all(), "next_attempt_at", SEND_LEASE, limit)

    @classmethod
    def take(cls, pk: int, claim: int) -> "OutgoingWebhook | None":
        """The webhook, if `claim` is still its latest; renews the lease for this worker."""
        rows = cls.objects.select_related("subscription__prediction")
        return leases.take(rows, pk, claim, "next_attempt_at", SEND_LEASE)

    def send(self) -> None:
        """Post this webhook once, and record the answer: delivered, retried later, or failed."""
        from .sender import WebhookError, describe, post

        # The attempt takes a claim of its own: the same message delivered twice by the broker
        # (or a second worker holding the old claim) sends nothing.
        if not self._update(
            Q(state=DeliveryState.PENDING),
            claims=F("claims") + 1,
            attempts=F("attempts") + 1,
            last_attempt_at=timezone.now(),
        ):
            return
        self.claim += 1
        self.attempts += 1
        try:
            status = post(self.subscription.url, self.body.encode(), self.signed_headers())
        except WebhookError as exc:
            self.attempt_failed(exc.message, exc.retryable, exc.status)
            return
        except Exception as exc:
            # A secret that no longer decrypts, a bug: said, and retried like any failure, so
            # the webhook still ends delivered or failed.
            log.exception("outgoing webhook %s: could not be sent", self.pk)
            self.attempt_failed(f"Darkroom could not send it: {describe(exc)}", True, None)
            return
        self._update(
            Q(state=DeliveryState.PENDING),
            state=DeliveryState.DELIVERED,
            next_attempt_at=None,
            last_status=status,
            last_error="",
        )

    def signed_headers(self) -> dict[str, str]:
        """The Standard Webhooks headers of this attempt: signed anew with the current time."""
        timestamp = str(int(time.time()))
        secret = SigningSecret.of(self.subscription.prediction.team_id)
        return {
            "webhook-id": self.webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": sign(secret, self.webhook_id, timestamp, self.body.encode()),
        }

    def attempt_failed(self, reason: str, retryable: bool, status: int | None) -> None:
        """Record a failed attempt: due again after its backoff, or failed for good after the
        last attempt or a refusal."""
        again = retryable and self.attempts < MAX_ATTEMPTS
        if retryable and not again:
            reason += f" Darkroom gave up after {self.attempts} attempts."
        delay = RETRY_DELAYS[self.attempts - 1] * random.uniform(0.9, 1.1) if again else None
        self._update(
            Q(state=DeliveryState.PENDING),
            state=DeliveryState.PENDING if again else DeliveryState.FAILED,
            next_attempt_at=timezone.now() + timedelta(seconds=delay) if again else None,
            last_status=status,
            last_error=reason,
        )

    def _update(self, condition: Q, **fields: Any) -> bool:
        """Update this row if `condition` holds and, for a worker's copy, its claim is still
        the latest; True if it did."""
        if self.claim is not None:
            condition &= Q(claims=self.claim)
        return bool(type(self).objects.filter(condition, pk=self.pk).update(**fields))

    @classmethod
    def forget_old(cls) -> int:
        """Delete the webhooks sent or given up on more than KEPT_FOR ago; how many."""
        deleted, _ = cls.objects.filter(
            created_at__lt=timezone.now() - KEPT_FOR, next_attempt_at=None
        ).delete()
        return deleted


class SigningSecret(models.Model):
    """A team's secret for signing the webhooks Darkroom sends its API clients ("whsec_" and 32
    random bytes in base64, as Replicate's), made on first use and encrypted at rest like the
    team's provider keys."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="+")
    secret_encrypted = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"Webhook signing secret of team {self.team_id}"

    @classmethod
    def of(cls, team_id: int) -> str:
        """The team's secret, made now if it has none; two first uses at once agree on one."""
        found = cls.objects.filter(team_id=team_id).first()
        if found is None:
            secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
            try:
                with transaction.atomic():
                    found = cls.objects.create(
                        team_id=team_id, secret_encrypted=fernet().encrypt(secret.encode()).decode()
                    )
            except IntegrityError:
                found = cls.objects.get(team_id=team_id)
        try:
            return fernet().decrypt(found.secret_encrypted.encode()).decode()
        except InvalidToken:
            raise ImproperlyConfigured(
                f"The webhook signing secret of team {team_id} cannot be decrypted with the "
                "configured DARKROOM_ENCRYPTION_KEYS."
            ) from None
