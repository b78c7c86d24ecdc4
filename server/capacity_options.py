"""The capacity model's options (server/capacity.py, server/latency_guard.py), from the server's flags."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

DEGRADATIONS = ("balanced", "maintain-framerate", "maintain-resolution")  # WebRTC's degradationPreference


def usable_cores() -> int:
    """The cores this process may run on (`cores` 0)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class CapacityOptions:
    min_fps: float = 8.0  # per call: below it the working side steps down; admission floor (--min-fps)
    max_fps: float = 30.0  # never ask a camera for more than this
    target_utilisation: float = 0.85  # of the usable cores
    path_target_ms: float = 50.0  # RTCP round trips grown by more than this over their least cut capacity too
    loss_target: float = 0.10  # so does a loss fraction above this in the viewers' receiver reports (a receiver
    # too starved to read its socket drops packets; a lossy radio's 1-2 % is not congestion)
    wait_target_ms: float = 40.0  # frames waiting longer than this plus one step (queued before the server,
    # or in the inbox), two samples in a row or twice as long once, make the guard cut capacity
    ewma: float = 0.2  # weight of a new step-time sample
    start_fps: float = 20.0  # calls joining together start at this (the first) + min_fps per other: a slow start
    solo_start_fps: float = 30.0  # a lone first call starts here: the camera's rate (the frame interval is part of
    # a round trip: a viewer that shows a frame when the next one begins adds 1/fps; 20 fps cost one caller 8 ms
    # p50 and 14 ms p95 in bench/latency.py); a call that joins within JOIN_SETTLED_S takes the difference back
    cores: int = 0  # 0 = the cores this process may run on
    degradation: str = "balanced"  # --degradation
    max_calls: int = 8  # --max-sessions: `room` never goes past it
    fresh_s: float = 20.0  # a figure older than this may guide, never refuse
    reprobe_s: float = 60.0  # a side measured longer ago than this is guessed afresh (load may have gone)
    down_below: float = 1.1  # the side steps down when the calls are predicted below this × the target ...
    down_margin: float = 1.3  # ... to the largest side predicted at this × the target
    up_headroom: float = 1.6  # stepping up needs the next side predicted at this × the target
    dwell_s: float = 5.0  # at least this long between a size change and a step up
    admit_margin: float = 1.25  # a call is admitted when every call is predicted at this × min_fps (estimates err:
    # measured here, 1 style call at 17.6 fps predicted 2 at 8.8 each; they got 5)

    def __post_init__(self) -> None:
        if self.degradation not in DEGRADATIONS:
            raise ValueError(f"degradation is one of {DEGRADATIONS}, got {self.degradation!r}")

    @classmethod
    def from_config(cls, config: Any) -> CapacityOptions:
        """From a `ServerConfig` (`--min-fps`, `--cpu-cores`, `--degradation`, `--max-sessions`)."""
        return cls(
            min_fps=config.min_fps,
            cores=config.cpu_cores,
            degradation=config.degradation,
            max_calls=config.max_sessions,
        )
