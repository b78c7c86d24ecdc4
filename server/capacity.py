"""How many frames per second this device can turn around, measured, and each call's share of it.

Two bounds, both measured while the server runs:
- the device thread: a step of N calls' frames costs `step_ms(N)` (per engine, frame side and
  step count; an unmeasured N is extrapolated from the nearest measured one with no batching
  gain, so the estimate errs low), so it turns around N * 1000 / step_ms(N) frames per second;
- the CPU: the process's CPU time per delivered frame (`time.process_time`, so WebRTC decode,
  encode, packetisation and conversions are all in it) against the cores it may use at a target
  utilisation.
The smaller bound, times a latency guard (cut when frames wait — queued before they reach us,
or in the inbox — longer than a step should make them, or when the calls' RTCP round trips grow
above their least, i.e. queueing towards or inside the viewers; eased back when neither happens;
another process on the machine shows up only there), is split evenly among the calls: `share(n)`.
A new call is admitted only while every call would keep `min_fps`.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class CapacityOptions:
    min_fps: float = 8.0  # admission floor per call (--min-fps)
    max_fps: float = 30.0  # never ask a camera for more than this
    target_utilisation: float = 0.7  # of the usable cores
    path_target_ms: float = 50.0  # RTCP round trips grown by more than this over their least cut capacity too
    wait_target_ms: float = 150.0  # frames waiting longer than this plus one step (queued before the server,
    # or in the inbox) make the guard cut capacity
    ewma: float = 0.2  # weight of a new step-time sample
    start_total_fps: float = 60.0  # split among the calls until a step has been measured (a slow start)
    cores: int = 0  # 0 = the cores this process may run on


class CapacityModel:
    """Thread-safe: steps are reported from the device thread, everything else from the event loop."""

    def __init__(
        self,
        options: CapacityOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.options = options or CapacityOptions()
        self.cores = self.options.cores or usable_cores()
        self._clock, self._cpu_clock = clock, cpu_clock
        self._lock = threading.Lock()
        self._step_ms: dict[tuple[str, int, int, int], float] = {}
        self._key: tuple[str, int, int] | None = None  # the (engine, side, steps) of the newest step
        self._frames = 0
        self._sample_at = (clock(), cpu_clock(), 0)
        self.cpu_ms_per_frame: float | None = None
        self.guard = 1.0
        self._ages: deque[float] = deque(maxlen=120)
        self._paths: deque[float] = deque(maxlen=64)
        self.calls = 0
        self.version = 0  # bumps when the shares may have changed

    # ---- measurements ---------------------------------------------------------------------
    def step_done(self, *, engine: str, side: int, steps: int, batch: int, step_ms: float) -> None:
        key = (engine, side, steps, batch)
        with self._lock:
            old = self._step_ms.get(key)
            a = self.options.ewma
            self._step_ms[key] = step_ms if old is None else (1 - a) * old + a * step_ms
            self._key = key[:3]
            self._frames += batch

    def frame_age(self, age_ms: float) -> None:
        """How long a processed frame waited before its step began (event loop)."""
        with self._lock:
            self._ages.append(age_ms)

    def path_delay(self, excess_ms: float) -> None:
        """A call's RTCP round trip above the least it has had (event loop, about once a second): queueing on
        the way to and inside the viewer — its kernel buffers, a starved receiver — which no frame age shows."""
        with self._lock:
            self._paths.append(excess_ms)

    def calls_changed(self, calls: int) -> None:
        with self._lock:
            self.calls = calls
            self.version += 1

    def sample(self) -> None:
        """Once a second: CPU time per frame since the last sample, and the latency guard."""
        now, cpu = self._clock(), self._cpu_clock()
        with self._lock:
            t0, cpu0, frames0 = self._sample_at
            frames = self._frames - frames0
            if now - t0 < 0.5:
                return
            if frames >= 3:
                per_frame = (cpu - cpu0) * 1000.0 / frames
                old = self.cpu_ms_per_frame
                self.cpu_ms_per_frame = per_frame if old is None else 0.8 * old + 0.2 * per_frame
            self._sample_at = (now, cpu, self._frames)
            step = self._step_ms.get((*self._key, max(1, self.calls)), 0.0) if self._key else 0.0
            # (measured, target) pairs; a frame may wait up to a whole step in the inbox
            signals: list[tuple[float, float]] = []
            if len(self._ages) >= 5:
                ages = sorted(self._ages)
                signals.append((ages[min(len(ages) - 1, int(0.95 * len(ages)))], self.options.wait_target_ms + step))
                self._ages.clear()
            if self._paths:
                paths = sorted(self._paths)  # the typical call's round-trip growth, not one outlier's
                signals.append((paths[len(paths) // 2], self.options.path_target_ms))
                self._paths.clear()
            if any(value > target for value, target in signals):
                self.guard = max(0.2, self.guard * 0.8)
            elif signals and all(value < 0.4 * target for value, target in signals):
                self.guard = min(1.0, self.guard * 1.05)  # clearly fresh: probe upwards slowly (latency stays flat)
            self.version += 1

    # ---- estimates ------------------------------------------------------------------------
    def step_ms(self, batch: int) -> float | None:
        """Measured (or extrapolated, no batching gain assumed) time of a step over `batch` calls."""
        with self._lock:
            if self._key is None:
                return None
            measured = {b: ms for (e, s, st, b), ms in self._step_ms.items() if (e, s, st) == self._key}
        if batch in measured:
            return measured[batch]
        below = [b for b in measured if b < batch]
        base = max(below) if below else min(measured)
        return measured[base] * batch / base

    def total_fps(self, calls: int) -> float | None:
        """Frames per second the device can turn around with `calls` calls; None before any step."""
        calls = max(1, calls)
        step = self.step_ms(calls)
        if step is None:
            return None
        bound = calls * 1000.0 / max(step, 0.1)
        if self.cpu_ms_per_frame:
            bound = min(bound, self.cores * self.options.target_utilisation * 1000.0 / self.cpu_ms_per_frame)
        return bound * self.guard

    def share(self, calls: int | None = None) -> float:
        """Frames per second each of `calls` calls may send (at most `max_fps`)."""
        calls = self.calls if calls is None else calls
        total = self.total_fps(calls)
        if total is None:
            total = self.options.start_total_fps
        return max(1.0, min(self.options.max_fps, total / max(1, calls)))

    def admits(self, calls_after: int) -> bool:
        """Whether `calls_after` calls would each still get `min_fps` (always, before anything is measured)."""
        total = self.total_fps(calls_after)
        return total is None or total / max(1, calls_after) >= self.options.min_fps

    def retry_after_s(self) -> int:
        """A polite wait before a refused caller tries again."""
        return max(2, min(30, math.ceil(5 * max(1, self.calls) / 4)))

    def summary(self) -> dict[str, float | int | None]:
        step = self.step_ms(max(1, self.calls))
        total = self.total_fps(self.calls)
        return {
            "calls": self.calls,
            "step_ms": None if step is None else round(step, 2),
            "cpu_ms_per_frame": None if self.cpu_ms_per_frame is None else round(self.cpu_ms_per_frame, 2),
            "total_fps": None if total is None else round(total, 2),
            "share_fps": round(self.share(), 2),
            "guard": round(self.guard, 3),
        }
