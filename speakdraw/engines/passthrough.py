"""No diffusion: frames go through unchanged, or through a cheap visible effect.

The effect exists so that a test can tell a processed frame from an echoed one;
`simulate_cost_ms` stands in for a slow model in overload tests and benches.
"""

from __future__ import annotations

import time

import numpy as np

from speakdraw.engines.base import Engine, EngineSession
from speakdraw.settings import Settings


class PassthroughSession(EngineSession):
    def __init__(self, settings: Settings, simulate_cost_ms: float) -> None:
        self._effect = settings.passthrough_effect
        self._cost_s = simulate_cost_ms / 1000.0

    def update(self, settings: Settings, changed: set[str]) -> None:
        self._effect = settings.passthrough_effect

    def process(self, rgb: np.ndarray) -> np.ndarray:
        if self._cost_s:
            _busy_wait(self._cost_s)
        if self._effect == "invert":
            return 255 - rgb
        return rgb


class PassthroughEngine(Engine):
    name = "passthrough"

    def __init__(self, simulate_cost_ms: float = 0.0) -> None:
        self.simulate_cost_ms = simulate_cost_ms

    def new_session(self, settings: Settings) -> PassthroughSession:
        return PassthroughSession(settings, self.simulate_cost_ms)


def _busy_wait(seconds: float) -> None:
    """Sleep like a model would block a worker thread (GIL released, as torch does)."""
    time.sleep(seconds)
