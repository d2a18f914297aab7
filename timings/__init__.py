"""Learned queue and run times per model, for the poller and the timings page.

The poller reads `distribution(provider, model)`, which costs no query (see learned.py)."""

from .learned import Timing, distribution

__all__ = ["Timing", "distribution"]
