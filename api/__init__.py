"""Replicate's HTTP API, served by Darkroom under /api/v1: scripts and tools built on Replicate's
clients run through Darkroom, and their predictions are tracked like the browser's."""
