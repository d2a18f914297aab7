from datetime import timedelta
from typing import Any

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from predictions.models import Prediction, Status

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
