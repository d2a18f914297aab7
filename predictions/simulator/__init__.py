"""A built-in provider speaking Replicate's prediction API, so Darkroom runs without a real one."""

from .engine import MODELS, Faults
from .server import Simulator

__all__ = ["MODELS", "Faults", "Simulator"]
