"""What has been learned of each model's times, as the poller reads it on every poll.

`distribution(provider, model)` answers from a snapshot of every ModelTiming row held in this
process and read again (one query) at most every REFRESH_SECONDS: the poller asks for every
poll, so an answer must cost no query. A snapshot builds each model's `Timing` the first time it
is asked for, then hands out the same object.

A model's figures blend what its own samples say with a prior, its n samples counting
n / (n + PRIOR_STRENGTH); their histograms say how the recent ones fall. The prior is what the
provider's other models take (each counting as much as it is known), itself blended the same
way with a wide built-in guess, so that a provider seen a few times does not yet speak for all
its models. A model never seen gets that prior alone, from all the provider's models.
"""

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import histograms
from .histograms import Distribution

REFRESH_SECONDS = 30.0
# Samples' worth of the prior: a model's own data outweighs it from about ten predictions on.
PRIOR_STRENGTH = 10.0
# A model never seen: queue 1 s and run 8 s (medians), a factor of e either way being common.
BUILT_IN_QUEUE = histograms.lognormal(1.0, 1.0)
BUILT_IN_RUN = histograms.lognormal(8.0, 1.0)
BUILT_IN_TOTAL = histograms.sum_of(BUILT_IN_QUEUE, BUILT_IN_RUN)
# A model's deadline is at least this many times its total p99: slower than that, it is stuck.
DEADLINE_FACTOR = 3.0


@dataclass(frozen=True, slots=True)
class Timing:
    """A model's times at a provider, in seconds: `queue` (accepted to started), `run` (started
    to ended) and `total` (accepted to ended).

    `total` is learned from the samples' own sums rather than computed from the other two, so it
    needs no assumption that queue and run times are independent; only the built-in prior's is
    a convolution (histograms.sum_of). `source` says where the figures come from: "learned"
    (the model's own samples, blended with the prior while they are few), "provider" (other
    models of the provider) or "built-in"."""

    provider: str
    model: str
    queue: Distribution
    run: Distribution
    total: Distribution
    source: str

    @property
    def samples(self) -> int:
        return self.run.samples

    def deadline(self, default_seconds: float) -> float:
        """Seconds a prediction of this model may take from acceptance before it is timed out:
        `default_seconds`, or DEADLINE_FACTOR times the total p99 where that is longer. Only
        a model's own samples stretch it: a prior is a guess."""
        if self.source != "learned":
            return default_seconds
        return max(default_seconds, DEADLINE_FACTOR * self.total.quantile(0.99))


class Evidence:
    """What some models of a provider say together: their histograms (queue, run, total),
    normalised and summed, each model counting as much as it is known: n / (n + PRIOR_STRENGTH)
    for its n samples."""

    def __init__(self) -> None:
        self.histograms = [histograms.empty() for _ in range(3)]
        self.worth = 0.0
        self.samples = 0

    def add(self, row: tuple, sign: int = 1) -> None:
        """Count in (or, with `sign` -1, leave out) a (samples, queue, run, total) row."""
        samples = row[0]
        worth = samples / (samples + PRIOR_STRENGTH)
        for summed, weights in zip(self.histograms, row[1:], strict=True):
            for i, probability in enumerate(histograms.normalised(weights)):
                # Never below nothing, whatever rounding leaves when a model is taken out.
                summed[i] = max(summed[i] + sign * worth * probability, 0.0)
        self.worth += sign * worth
        self.samples += sign * samples

    def without(self, row: tuple) -> "Evidence":
        rest = Evidence()
        rest.histograms = [list(summed) for summed in self.histograms]
        rest.worth, rest.samples = self.worth, self.samples
        rest.add(row, -1)
        return rest

    def prior(self) -> tuple[list[float], list[float], list[float], str]:
        """The queue, run and total histograms of a typical model, and where they come from:
        these models ("provider"), blended with the built-in guess while they are little
        known, or the guess alone ("built-in")."""
        if not self.samples:
            return BUILT_IN_QUEUE, BUILT_IN_RUN, BUILT_IN_TOTAL, "built-in"
        confidence = self.samples / (self.samples + PRIOR_STRENGTH)
        queue, run, total = (
            histograms.blend(built_in, summed, confidence)
            for built_in, summed in zip(
                (BUILT_IN_QUEUE, BUILT_IN_RUN, BUILT_IN_TOTAL), self.histograms, strict=True
            )
        )
        return queue, run, total, "provider"


class Snapshot:
    """Every ModelTiming row as read at one moment, and the Timings built from them so far."""

    def __init__(self, rows: Sequence[tuple], expires: float) -> None:
        self.expires = expires
        # (provider, model) -> (samples, queue, run, total), for rows with something learned.
        self.rows = {(provider, model): rest for provider, model, *rest in rows if sum(rest[2])}
        self.timings: dict[tuple[str, str], Timing] = {}
        self.evidence: dict[str, Evidence] = {}

    def timing(self, provider: str, model: str) -> Timing:
        timing = self.timings.get((provider, model))
        if timing is None:
            timing = self.timings[provider, model] = self.build(provider, model)
        return timing

    def build(self, provider: str, model: str) -> Timing:
        """A model's own samples blended with what the provider's other models say; a model
        without samples gets what they all say."""
        evidence = self.provider_evidence(provider)
        row = self.rows.get((provider, model))
        if row is None:
            queue, run, total, source = evidence.prior()
            return Timing(
                provider, model, Distribution(queue), Distribution(run), Distribution(total), source
            )
        queue, run, total, _ = evidence.without(row).prior()
        samples, own_queue, own_run, own_total = row
        confidence = samples / (samples + PRIOR_STRENGTH)
        return Timing(
            provider,
            model,
            Distribution(histograms.blend(queue, own_queue, confidence), samples),
            Distribution(histograms.blend(run, own_run, confidence), samples),
            Distribution(histograms.blend(total, own_total, confidence), samples),
            "learned",
        )

    def provider_evidence(self, provider: str) -> Evidence:
        evidence = self.evidence.get(provider)
        if evidence is None:
            evidence = self.evidence[provider] = Evidence()
            for (p, _), row in self.rows.items():
                if p == provider:
                    evidence.add(row)
        return evidence


class TimingCache:
    """The snapshot this process reads, replaced once it is `max_age` seconds old by `clock`."""

    def __init__(
        self, max_age: float = REFRESH_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_age = max_age
        self.clock = clock
        self.snapshot: Snapshot | None = None
        self.lock = threading.Lock()

    def distribution(self, provider: str, model: str) -> Timing:
        snapshot = self.snapshot
        if snapshot is None or self.clock() >= snapshot.expires:
            snapshot = self.refresh()
        return snapshot.timing(provider, model)

    def refresh(self) -> Snapshot:
        """Read every row again. While one thread reads, the others go on with the old
        snapshot rather than wait or read too (only a first read makes them wait)."""
        if not self.lock.acquire(blocking=self.snapshot is None):
            return self.snapshot
        try:
            from .models import ModelTiming  # the app registry loads this package first

            rows = ModelTiming.objects.order_by().values_list(
                "provider", "model", "samples", "queue", "run", "total"
            )
            self.snapshot = Snapshot(list(rows), self.clock() + self.max_age)
            return self.snapshot
        finally:
            self.lock.release()

    def clear(self) -> None:
        """Forget the snapshot: the next question reads the rows again."""
        self.snapshot = None


cache = TimingCache()


def distribution(provider: str, model: str) -> Timing:
    """What is known of `model`'s times at `provider`, at most REFRESH_SECONDS old."""
    return cache.distribution(provider, model)
