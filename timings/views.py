from dataclasses import dataclass
from datetime import timedelta

from django.shortcuts import render

from accounts.teams import for_team, team_required
from predictions.client import provider_label
from predictions.models import Prediction

from . import plans
from .learned import Timing, distribution
from .models import ModelTiming


@dataclass(frozen=True)
class TimingRow:
    """A model's learned figures as the page shows them."""

    timing: Timing

    @property
    def provider_label(self) -> str:
        return provider_label(self.timing.provider)

    @property
    def deadline(self) -> timedelta:
        """The deadline a prediction of the model gets, by the prediction's own rule."""
        return Prediction(provider=self.timing.provider, model=self.timing.model).deadline

    def figures(self) -> dict[str, timedelta]:
        queue, run = self.timing.queue, self.timing.run
        return {
            "queue_p50": timedelta(seconds=queue.quantile(0.5)),
            "queue_p90": timedelta(seconds=queue.quantile(0.9)),
            "run_p50": timedelta(seconds=run.quantile(0.5)),
            "run_p90": timedelta(seconds=run.quantile(0.9)),
            "run_p99": timedelta(seconds=run.quantile(0.99)),
        }

    def plan(self) -> str:
        polls = plans.typical_polls(self.timing, self.deadline.total_seconds())
        return plans.describe(self.timing, polls)


@team_required()
def index(request):
    """The queue and run times learned for each model the team has used, and how they set its
    polling; the same for every role, as nothing here can be changed. The figures are this
    process's snapshot (learned.py), as the poller sees them."""
    used = ModelTiming.used_in(for_team(request, Prediction.objects.all()))
    rows = [TimingRow(distribution(provider, model)) for provider, model in used]
    return render(request, "timings/index.html", {"rows": rows})
