"""What the studio shows beside the New images form: the member's latest predictions, each
with its live status, progress, images and cost, newest first."""

import hashlib
from dataclasses import dataclass

from django.db.models.functions import Left, Right
from django.http import HttpRequest

from accounts.teams import for_team

from .logs import Progress, parse_progress, shown_text
from .models import RUNNING, Prediction

# How many of the member's predictions the studio keeps in view.
SHOWN = 8
# A progress bar's line is short: the log's end holds the latest one, its start the seed.
TAIL = 400


@dataclass
class StudioResults:
    predictions: list[Prediction]
    # Why the latest Run again was not sent, if it was not.
    error: str = ""
    # What the latest Generate sent, when it sent several.
    sent: str = ""

    @staticmethod
    def latest(request: HttpRequest):
        predictions = for_team(request, Prediction.objects.filter(submitted_by=request.user))
        return predictions.order_by("-submitted_at", "-id")

    @classmethod
    def version(cls, request: HttpRequest) -> str:
        """Which predictions show and when each last changed (its progress included), in one
        short query: the results' ETag."""
        changes = cls.latest(request).values_list("pk", "updated_at")[:SHOWN]
        text = ",".join(f"{pk}:{updated.timestamp()}" for pk, updated in changes)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @classmethod
    def of(cls, request: HttpRequest, error: str = "", sent: str = "") -> "StudioResults":
        predictions = (
            cls.latest(request)
            .select_related("submitted_by")
            .prefetch_related("outputs")
            .defer("logs")
            .annotate(log_head=Left("logs", TAIL), log_tail=Right("logs", TAIL))
        )
        return cls(list(predictions[:SHOWN]), error, sent)

    @property
    def watching(self) -> bool:
        """Whether anything shown can still change: a prediction running, or an output the
        archive will still try."""
        return any(
            p.status in RUNNING or any(output.retrying for output in p.outputs.all())
            for p in self.predictions
        )


def latest_progress(prediction: Prediction) -> Progress | None:
    """The progress bar the end of a running prediction's log shows, if it shows one."""
    if prediction.status not in RUNNING:
        return None
    lines = getattr(prediction, "log_tail", "").rstrip("\n").rsplit("\n", 1)
    return parse_progress(shown_text(lines[-1])) if lines[-1] else None
