"""How long each model queues and runs, learned from the predictions that ended.

An ending prediction only appends a `TimingSample` (an INSERT in its own transaction): many
predictions of one model end at once, and none of them waits for a shared row. A periodic task
then folds the samples into one `ModelTiming` per (provider, model) and deletes them.
"""

from collections import defaultdict
from datetime import datetime

from django.db import models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from predictions.filters import distinct_values
from predictions.models import Prediction, Status

from . import histograms

# An observation counts half after this many newer ones of its model: a model that got faster
# (or slower) is relearned within a few hundred predictions, and a rarely used one keeps what
# it knows however long it sits idle.
HALF_LIFE = 200
# Samples folded in one transaction: short enough that no lock is held long.
LEARN_BATCH = 2000
# Batches one run folds at most; the next run (10 s later) goes on with the rest.
LEARN_BATCHES = 10
# Longer than any prediction Darkroom follows: a sample beyond it comes from a wrong clock.
LONGEST = 24 * 3600.0


class TimingSample(models.Model):
    """One ended prediction's queue and run times, waiting to be folded into its ModelTiming.

    No index but the primary key: the learner takes the oldest by it, and nothing else reads
    these rows."""

    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=201)
    queue_seconds = models.FloatField()
    run_seconds = models.FloatField()
    at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.model}: queued {self.queue_seconds:g} s, ran {self.run_seconds:g} s"

    @classmethod
    def record(cls, prediction: Prediction) -> "TimingSample | None":
        """A sample of `prediction` if it just ended after running, with provider times that
        make sense; called in the transaction that ended it, which is sent once per prediction
        (no end state moves to another). Canceled, aborted and timed-out predictions say
        nothing about how long the model takes."""
        if prediction.status not in (Status.SUCCEEDED, Status.FAILED):
            return None
        times = (prediction.created_at, prediction.started_at, prediction.completed_at)
        # A provider that left out a time or its zone says nothing usable (and an aware and a
        # naive time cannot be subtracted: this must not fail the transaction that ends it).
        if not all(isinstance(t, datetime) and timezone.is_aware(t) for t in times):
            return None
        created_at, started_at, completed_at = times
        queue = (started_at - created_at).total_seconds()
        run = (completed_at - started_at).total_seconds()
        if queue < 0 or run < 0 or queue + run > LONGEST:
            return None
        return cls.objects.create(
            provider=prediction.provider,
            model=prediction.model,
            queue_seconds=queue,
            run_seconds=run,
        )


class ModelTiming(models.Model):
    """What is known of one model's times at one provider: decayed histograms (histograms.py)
    of its queue time (created to started), run time (started to completed), and total time
    (created to completed: learned as observed, not as a sum, so it keeps whatever ties the
    two together), and how many samples went into them."""

    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=201)
    samples = models.PositiveIntegerField(default=0)
    queue = models.JSONField(default=histograms.empty)
    run = models.JSONField(default=histograms.empty)
    total = models.JSONField(default=histograms.empty)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider", "model"]
        constraints = [
            # One row a model; also serves the learner's lookup of the rows it folds into, and
            # the timings page's rows for a team's models.
            models.UniqueConstraint(fields=["provider", "model"], name="model_timing_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.model} at {self.provider} ({self.samples} samples)"

    def fold(self, samples: list[tuple[float, float]]) -> None:
        """Add (queue, run) seconds, oldest first, to the histograms."""
        queues = [queue for queue, _ in samples]
        runs = [run for _, run in samples]
        self.queue = histograms.fold(self.queue, queues, HALF_LIFE)
        self.run = histograms.fold(self.run, runs, HALF_LIFE)
        self.total = histograms.fold(
            self.total, [q + r for q, r in zip(queues, runs, strict=True)], HALF_LIFE
        )
        self.samples += len(samples)

    @classmethod
    def learn(cls) -> int:
        """Fold waiting samples into their models' rows, a batch per transaction, until none
        are left or LEARN_BATCHES are done; how many were folded."""
        folded = 0
        for _ in range(LEARN_BATCHES):
            count = cls.learn_batch(LEARN_BATCH)
            folded += count
            if count < LEARN_BATCH:
                break
        return folded

    @classmethod
    def learn_batch(cls, limit: int) -> int:
        """Fold the oldest `limit` samples nobody else is folding, and delete them.

        Safe beside other learners: on PostgreSQL each takes samples the others have not locked
        (SKIP LOCKED), and locks the rows it folds into in one order, so two never wait on each
        other in a circle; on SQLite the transaction takes the write lock up front (IMMEDIATE
        mode) and the next learner finds the samples gone. A sample is folded and deleted in
        one transaction, so it is counted once or, if the learner dies, not yet.
        """
        with transaction.atomic():
            taken = list(
                TimingSample.objects.order_by("pk")
                .select_for_update(skip_locked=True)
                .values_list("pk", "provider", "model", "queue_seconds", "run_seconds")[:limit]
            )
            if not taken:
                return 0
            by_model: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
            for _, provider, model, queue, run in taken:
                by_model[provider, model].append((queue, run))
            keys = sorted(by_model)
            # A model seen for the first time gets its row; one another learner is inserting
            # meanwhile is waited for, then left as it is.
            cls.objects.bulk_create(
                [cls(provider=provider, model=model) for provider, model in keys],
                ignore_conflicts=True,
            )
            # Locks a row of another provider's model of the same name too, for a moment: one
            # list of pairs would make an expression too deep for SQLite in a large batch.
            rows = (
                cls.objects.filter(
                    provider__in={provider for provider, _ in keys},
                    model__in={model for _, model in keys},
                )
                .order_by("provider", "model")
                .select_for_update()
            )
            for row in rows:
                if (row.provider, row.model) in by_model:
                    row.fold(by_model[row.provider, row.model])
                    row.save(update_fields=["samples", "queue", "run", "total", "updated_at"])
            TimingSample.objects.filter(pk__in=[pk for pk, *_ in taken]).delete()
        return len(taken)

    @staticmethod
    def used_in(predictions: QuerySet[Prediction]) -> list[tuple[str, str]]:
        """The (provider, model) pairs of `predictions` (one team's), in order of model.

        A team may have run a model at more than one provider, and the predictions have no
        index on provider: each model's latest prediction names one provider at once, and only
        a provider that has learned times for the model is looked for among the rest."""
        models_used = distinct_values(predictions, "model")
        learned = defaultdict(set)
        for provider, model in ModelTiming.objects.filter(model__in=models_used).values_list(
            "provider", "model"
        ):
            learned[model].add(provider)
        pairs = []
        for model in models_used:
            of_model = predictions.filter(model=model)
            latest = of_model.order_by("-submitted_at", "-id").values_list("provider", flat=True)
            providers = {latest[0]}
            providers.update(
                provider
                for provider in learned[model] - providers
                if of_model.filter(provider=provider).exists()
            )
            pairs.extend((provider, model) for provider in sorted(providers))
        return pairs
