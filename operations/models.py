"""What operators watch, kept where every process can add to it and any process can read it.

Processes count in memory (operations.tallies) and add their counts here every few seconds:
provider requests by the minute (the provider health page) and in all (the counters of
/metrics), and predictions' ends. Every write adds to a row (`count = count + n`), so any number
of processes may write at once; rows are locked in one order, so no two writers deadlock. Each
worker process's poller stamps a heartbeat.
"""

from datetime import datetime, timedelta
from functools import reduce
from itertools import zip_longest
from operator import or_

from django.db import models, transaction
from django.db.models import Count, F, Max, Q, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from predictions.models import Prediction, Status


class Heartbeat(models.Model):
    """A worker process whose poller was alive at `seen_at`: it stamps this every few seconds."""

    worker = models.CharField(max_length=255, unique=True)  # "host:pid"
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.worker} at {self.seen_at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def stamp(cls, worker: str) -> None:
        now = timezone.now()
        if not cls.objects.filter(worker=worker).update(seen_at=now):
            cls.objects.bulk_create([cls(worker=worker, seen_at=now)], ignore_conflicts=True)

    @classmethod
    def forget_before(cls, when: datetime) -> None:
        """Workers that stopped long ago."""
        cls.objects.filter(seen_at__lt=when).delete()

    @classmethod
    def latest(cls, fresh_within: timedelta) -> tuple[datetime | None, int]:
        """When the newest heartbeat was stamped, and how many workers stamped one within
        `fresh_within` (a table of a row per worker process: no index needed)."""
        seen = cls.objects.aggregate(
            latest=Max("seen_at"),
            fresh=Count("pk", filter=Q(seen_at__gte=timezone.now() - fresh_within)),
        )
        return seen["latest"], seen["fresh"]


# A minute's row is found by these fields, in this order (tallies' keys follow it).
MINUTE_KEY = ("account", "minute", "provider", "request", "outcome")
TOTAL_KEY = ("provider", "request", "outcome")


class RequestMinute(models.Model):
    """Requests to a provider in one minute, of one kind (`request`: create, get, cancel, list,
    secret or other), sent with one key, that ended one way (`outcome`, tallies.outcome_of)."""

    account = models.CharField(max_length=16)
    minute = models.DateTimeField()
    provider = models.CharField(max_length=20)
    request = models.CharField(max_length=10)
    outcome = models.CharField(max_length=16)
    count = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(default=0.0)  # all of them together
    slowest = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            # Also serves the provider health page: one account's minutes of the last hour.
            models.UniqueConstraint(fields=MINUTE_KEY, name="request_minute_unique"),
        ]
        indexes = [
            # The budget's last minute (every account's), and forgetting old minutes.
            models.Index(fields=["minute"], name="request_minute_idx"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.count} {self.request} to {self.provider} at {self.minute:%H:%M}: {self.outcome}"
        )

    @classmethod
    def add(cls, counts: dict[tuple, tuple[int, float, float]]) -> None:
        """Add (count, seconds, slowest) to each minute keyed as MINUTE_KEY."""
        keys = sorted(counts)
        with transaction.atomic():
            cls.objects.bulk_create(
                [cls(**dict(zip(MINUTE_KEY, key, strict=True))) for key in keys],
                ignore_conflicts=True,
            )
            for key in keys:
                count, seconds, slowest = counts[key]
                cls.objects.filter(**dict(zip(MINUTE_KEY, key, strict=True))).update(
                    count=F("count") + count,
                    seconds=F("seconds") + seconds,
                    slowest=Greatest("slowest", Value(slowest)),
                )

    @classmethod
    def forget_before(cls, when: datetime) -> None:
        cls.objects.filter(minute__lt=when).delete()


class RequestTotal(models.Model):
    """Every request to a provider since the deployment began, by kind and outcome: the counters
    and the latency histogram of /metrics. Never pruned: a few dozen rows."""

    provider = models.CharField(max_length=20)
    request = models.CharField(max_length=10)
    outcome = models.CharField(max_length=16)
    count = models.BigIntegerField(default=0)
    seconds = models.FloatField(default=0.0)
    # Requests in each latency bucket (tallies.LATENCY_BUCKETS, then one for anything slower),
    # each counted once: /metrics adds them up into Prometheus's cumulative buckets.
    buckets = models.JSONField(default=list)

    class Meta:
        constraints = [models.UniqueConstraint(fields=TOTAL_KEY, name="request_total_unique")]

    def __str__(self) -> str:
        return f"{self.count} {self.request} to {self.provider}: {self.outcome}"

    @classmethod
    def add(cls, counts: dict[tuple, tuple[int, float, list[int]]]) -> None:
        """Add (count, seconds, buckets) to each total keyed as TOTAL_KEY. The buckets are a
        list, so the rows are read and written under a lock rather than added to in SQL."""
        keys = sorted(counts)
        with transaction.atomic():
            cls.objects.bulk_create(
                [cls(**dict(zip(TOTAL_KEY, key, strict=True))) for key in keys],
                ignore_conflicts=True,
            )
            wanted = reduce(or_, (Q(**dict(zip(TOTAL_KEY, key, strict=True))) for key in keys))
            for row in cls.objects.select_for_update().filter(wanted).order_by("pk"):
                count, seconds, buckets = counts[(row.provider, row.request, row.outcome)]
                row.count += count
                row.seconds += seconds
                row.buckets = [a + b for a, b in zip_longest(row.buckets, buckets, fillvalue=0)]
                row.save(update_fields=["count", "seconds", "buckets"])


class PredictionEnds(models.Model):
    """How many of a provider's predictions reached an end status. A create given up as "submit
    outcome unknown" that is resolved later counts for both of its ends."""

    provider = models.CharField(max_length=20)
    status = models.CharField(max_length=20)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "status"], name="prediction_ends_unique")
        ]

    def __str__(self) -> str:
        return f"{self.count} {self.provider} predictions {self.status}"

    @classmethod
    def add(cls, counts: dict[tuple[str, str], int]) -> None:
        keys = sorted(counts)
        with transaction.atomic():
            cls.objects.bulk_create(
                [cls(provider=provider, status=status) for provider, status in keys],
                ignore_conflicts=True,
            )
            for provider, status in keys:
                cls.objects.filter(provider=provider, status=status).update(
                    count=F("count") + counts[(provider, status)]
                )


class UnknownOutcome(models.Model):
    """A create Darkroom gave up on as "submit outcome unknown". It is resolved once its
    prediction's status says what became of it (the provider's late answer, or a lookup that
    found it or found it missing): nothing needs to be written when that happens."""

    prediction = models.OneToOneField(Prediction, on_delete=models.CASCADE, related_name="+")
    # Indexed by unknown_outcome_recent_idx, whose first column it is.
    team = models.ForeignKey(
        "accounts.Team", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    given_up_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # A team's recent ones: the provider health page.
            models.Index(fields=["team", "-given_up_at"], name="unknown_outcome_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"Prediction {self.prediction_id}: outcome unknown since {self.given_up_at}"

    @property
    def resolved(self) -> bool:
        return self.prediction.status != Status.SUBMIT_UNKNOWN

    @classmethod
    def remember(cls, prediction: Prediction) -> None:
        """In the transaction that gave `prediction` up: one INSERT, once."""
        cls.objects.bulk_create(
            [cls(prediction_id=prediction.pk, team_id=prediction.team_id)], ignore_conflicts=True
        )

    @classmethod
    def by_status(cls, outcomes: models.QuerySet) -> dict[str, int]:
        """How many of `outcomes` have their predictions in each status now: those still
        `submit_unknown` are unresolved, the rest resolved."""
        rows = outcomes.order_by().values_list("prediction__status").annotate(n=Count("pk"))
        return dict(rows)
