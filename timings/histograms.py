"""Durations as histograms over log-spaced bins: how learned timings are stored, blended and read.

Every distribution here, learned or prior, is a list of BINS weights over the same bins, from
0.05 s to 2 h with each bin about 28 % wider than the one before. The same bins make blending
two distributions a weighted sum and reading one a walk down its cumulative weights. Within a bin
a distribution's weight is spread evenly over the logarithm of the duration, so quantiles move
smoothly; the resolution is a bin's width (28 %). Shorter than 0.05 s counts in the first bin
and longer than 2 h in the last: the poller does not need to tell 10 ms from 50 ms, and no
prediction is followed for hours.
"""

import math
from bisect import bisect_left
from collections.abc import Sequence

LOWEST = 0.05
HIGHEST = 2 * 3600.0
BINS = 48
LOG_LOWEST = math.log(LOWEST)
LOG_WIDTH = (math.log(HIGHEST) - LOG_LOWEST) / BINS
EDGES = [math.exp(LOG_LOWEST + i * LOG_WIDTH) for i in range(BINS + 1)]
# A bin's typical duration (its geometric middle), for adding two durations bin by bin.
MIDDLES = [math.exp(LOG_LOWEST + (i + 0.5) * LOG_WIDTH) for i in range(BINS)]


def bin_of(seconds: float) -> int:
    if seconds <= LOWEST:
        return 0
    return min(int((math.log(seconds) - LOG_LOWEST) / LOG_WIDTH), BINS - 1)


def empty() -> list[float]:
    return [0.0] * BINS


def fold(weights: Sequence[float], durations: Sequence[float], half_life: float) -> list[float]:
    """`weights` with `durations` (oldest first) added, each worth 1 when it arrives; every
    arrival multiplies what came before it by 2^(-1/half_life), so after `half_life` arrivals an
    observation counts half. Tiny weights are dropped to keep the stored row short."""
    keep = 0.5 ** (1 / half_life)
    aged = keep ** len(durations)
    folded = [weight * aged for weight in weights]
    for age, seconds in enumerate(reversed(durations)):
        folded[bin_of(seconds)] += keep**age
    return [round(weight, 6) for weight in folded]


def blend(prior: Sequence[float], data: Sequence[float], confidence: float) -> list[float]:
    """`data` normalised, worth `confidence` (0 to 1), and `prior` normalised, the rest."""
    prior, data = normalised(prior), normalised(data)
    if not any(data):
        return prior
    return [(1 - confidence) * p + confidence * d for p, d in zip(prior, data, strict=True)]


def normalised(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    return [weight / total for weight in weights] if total > 0 else list(weights)


def lognormal(median: float, sigma: float) -> list[float]:
    """A lognormal distribution's probability per bin; the tails go to the first and last bins."""
    mu = math.log(median)

    def below(seconds: float) -> float:
        return 0.5 * (1 + math.erf((math.log(seconds) - mu) / (sigma * math.sqrt(2))))

    probabilities = [below(EDGES[i + 1]) - below(EDGES[i]) for i in range(BINS)]
    probabilities[0] += below(EDGES[0])
    probabilities[-1] += 1 - below(EDGES[-1])
    return probabilities


def sum_of(first: Sequence[float], second: Sequence[float]) -> list[float]:
    """The distribution of the sum of two independent durations (a convolution): each pair of
    bins puts its joint probability in the bin of the sum of their middles."""
    first, second = normalised(first), normalised(second)
    summed = empty()
    for i, p in enumerate(first):
        if p:
            for j, q in enumerate(second):
                if q:
                    summed[bin_of(MIDDLES[i] + MIDDLES[j])] += p * q
    return summed


class Distribution:
    """A duration's distribution, read: `cdf`, `survival` and `quantile` in seconds.

    `samples` is how many observations it was learned from (0 for a prior alone)."""

    __slots__ = ("probabilities", "cumulative", "samples")

    def __init__(self, weights: Sequence[float], samples: int = 0) -> None:
        self.probabilities = normalised(weights)
        self.cumulative = [0.0]
        for probability in self.probabilities:
            self.cumulative.append(self.cumulative[-1] + probability)
        self.samples = samples

    def __repr__(self) -> str:
        return f"<Distribution median {self.quantile(0.5):.3g} s, {self.samples} samples>"

    def cdf(self, seconds: float) -> float:
        """The probability that the duration is `seconds` or less."""
        if seconds <= LOWEST:
            return 0.0
        if seconds >= HIGHEST:
            return 1.0
        position = (math.log(seconds) - LOG_LOWEST) / LOG_WIDTH
        i = min(int(position), BINS - 1)
        return min(self.cumulative[i] + self.probabilities[i] * (position - i), 1.0)

    def survival(self, seconds: float) -> float:
        """The probability that the duration is longer than `seconds`."""
        return 1.0 - self.cdf(seconds)

    def quantile(self, p: float) -> float:
        """The duration, in seconds, that a fraction `p` (0 to 1) of observations stay within."""
        # Not past the last cumulative weight, which rounding may leave a hair under 1.
        p = min(max(p, 0.0), self.cumulative[-1])
        # The first bin whose cumulative weight reaches p, skipping empty bins.
        i = max(bisect_left(self.cumulative, p, lo=1) - 1, 0)
        while i < BINS - 1 and not self.probabilities[i]:
            i += 1
        probability = self.probabilities[i]
        inside = (p - self.cumulative[i]) / probability if probability else 0.0
        return math.exp(LOG_LOWEST + (i + min(max(inside, 0.0), 1.0)) * LOG_WIDTH)
