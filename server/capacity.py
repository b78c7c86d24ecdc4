"""How many frames per second this device can turn around, measured; the size frames are worked at; who fits.

What is measured while the server runs:
- the device thread: a step of N calls' frames costs `step_ms(side, N)`, keyed by engine, step count,
  working side and batch. A batch not yet seen is extrapolated from the nearest measured one with no
  batching gain (errs low); a side not yet seen (or not seen for `reprobe_s`) from the nearest measured
  side by pixel count — a first guess, replaced by a measurement as soon as frames run at that side;
- the CPU: the process's CPU time per delivered frame (`time.process_time`, so WebRTC decode, encode,
  packetisation and conversions are all in it), per working side, against the cores it may use at a
  target utilisation;
- a latency guard for load this process cannot see (the callers' own CPU, other programs): a limit on the
  calls' total frame rate, run as congestion control runs one (server/latency_guard.py). When its cut leaves
  the calls below the target, the working side steps down at once (the limit carried to the smaller side
  in proportion to the side); a cut counts as a measurement of the device (working side, admission) for
  `fresh_s`.

What it decides:
- the working side (`--degradation`): when the calls cannot get `min_fps` at the requested frame size
  (`balanced`; `maintain-framerate` aims at `max_fps`), frames are worked at a smaller side — multiples
  of 64, never below 192 — and back up one step when the next size up is predicted at `up_headroom` ×
  the target and `dwell_s` has passed since the last change (hysteresis: no flapping);
  `maintain-resolution` keeps the size and lets the frame rate fall;
- each call's share, `share()`: the calls split the smaller bound evenly, within the guard's limit;
- `room(calls)`: how many more calls fit. An empty server always takes one; a full one is one where
  the calls present plus one would get less than `min_fps` (with a margin, `admit_margin`: estimates
  err) even at the smallest working side, judged only on figures measured at that side, engine and step
  count within `fresh_s` — an estimate from another size or from long ago never refuses a call on its own.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.capacity_options import CapacityOptions, usable_cores
from server.latency_guard import LatencyGuard

SIDE_STEP = 64
MIN_WORKING_SIDE = 192


def working_ladder(requested: int) -> list[int]:
    """The sides a call asking for `requested` px may be worked at, largest first: the request itself, then
    the multiples of 64 below it down to 192 (a request at or below 192 is worked as asked)."""
    sides = [requested]
    side = (requested - 1) // SIDE_STEP * SIDE_STEP
    while side >= MIN_WORKING_SIDE:
        sides.append(side)
        side -= SIDE_STEP
    return sides


TRUSTED_SAMPLES = 3  # a step time seen this often is trusted over a single (possibly cold or jittered) one


@dataclass
class Measured:
    """A step time: its moving average, when it was last seen, and how often since it was (re)started."""

    ms: float
    at: float
    n: int = 1


@dataclass
class Estimate:
    """Frames per second each of `calls` calls gets at `side`, and whether the figures behind it may refuse."""

    fps: float
    calls: int
    side: int
    fresh: bool  # measured at this side, engine and step count within `fresh_s`


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
        # (engine, steps, side, batch) -> (step ms, when measured)
        self._step_ms: dict[tuple[str, int, int, int], Measured] = {}
        self._since_change: Counter[int] = Counter()  # steps seen at each side since the working side changed
        self._config: tuple[str, int] | None = None  # (engine, steps) of the newest step
        self.requested_side: int | None = None  # the largest side the calls of the newest step asked for
        self._frames = 0
        self._frames_by_side: Counter[int] = Counter()
        self._sample_at = (clock(), cpu_clock(), 0)
        self._cpu_ms: dict[int, tuple[float, float]] = {}  # side -> (CPU ms per frame, when)
        self.latency_guard = LatencyGuard(self.options, clock)
        self.delivered_fps = 0.0  # frames/s turned around over the last sample
        self.calls = 0
        self.cap: int | None = None  # the working side's upper bound now (None: as requested)
        self._changed_at = -math.inf
        self.version = 0  # bumps when the shares or the working side may have changed

    # ---- measurements ---------------------------------------------------------------------
    def step_done(
        self, *, engine: str, side: int, steps: int, batch: int, step_ms: float, requested: int | None = None
    ) -> None:
        """A device step over `batch` calls' frames worked at `side` px (their settings asked for `requested`)."""
        key = (engine, steps, side, batch)
        now = self._clock()
        with self._lock:
            old = self._step_ms.get(key)
            if old is not None and now - old.at <= self.options.reprobe_s:
                a = max(self.options.ewma, 1.0 / (old.n + 1))  # a plain mean of the first few, then a moving one
                self._step_ms[key] = Measured((1 - a) * old.ms + a * step_ms, now, old.n + 1)
            else:
                self._step_ms[key] = Measured(step_ms, now)
            self._since_change[side] += 1
            if self._config != (engine, steps):
                self._config = (engine, steps)
                self.version += 1
            self.requested_side = requested or side
            self._frames += batch
            self._frames_by_side[side] += batch

    @property
    def limit_fps(self) -> float | None:
        """Total frames/s the latency guard allows the calls (None: no call yet)."""
        return self.latency_guard.limit_fps

    @limit_fps.setter
    def limit_fps(self, fps: float | None) -> None:
        self.latency_guard.limit_fps = fps

    def frame_age(self, age_ms: float, call: Any = None) -> None:
        """How long a processed frame of `call` (any key) waited before its step began (event loop)."""
        with self._lock:
            self.latency_guard.frame_age(age_ms, call)

    def path_delay(self, excess_ms: float) -> None:
        """A call's RTCP round trip above the least it has had (event loop, about once a second): queueing on
        the way to and inside the viewer — its kernel buffers, a starved receiver — which no frame age shows."""
        with self._lock:
            self.latency_guard.path_delay(excess_ms)

    def path_loss(self, fraction: float) -> None:
        """A viewer's receiver report: the fraction of our packets it lost lately (event loop, about once a second)."""
        with self._lock:
            self.latency_guard.path_loss(fraction)

    def calls_changed(self, calls: int) -> None:
        with self._lock:
            old, self.calls = self.calls, calls
            if old == 0 and calls > 0:  # CPU per frame is measured from here: the time before (start-up, loading
                # the model: 3.4 s of CPU "per frame" over the first 3 frames of tiny-sd15) is no call's cost
                self._sample_at = (self._clock(), self._cpu_clock(), self._frames)
            self.latency_guard.calls_changed(old, calls)
            if calls == 0:  # the next call starts afresh (the guard too)
                self.cap = None
                self._changed_at = -math.inf
            self.version += 1

    def sample(self) -> None:
        """About once a second (every call's governor calls it; extra calls return at once): CPU time per
        frame since the last sample, the latency guard, then the working side."""
        now, cpu = self._clock(), self._cpu_clock()
        with self._lock:
            t0, cpu0, frames0 = self._sample_at
            frames = self._frames - frames0
            if now - t0 < 0.9:
                return
            if frames >= 3 and self._frames_by_side:
                side = self._frames_by_side.most_common(1)[0][0]
                per_frame = (cpu - cpu0) * 1000.0 / frames
                old = self._cpu_ms.get(side)
                if old is not None and now - old[1] <= self.options.reprobe_s:
                    per_frame = 0.8 * old[0] + 0.2 * per_frame
                self._cpu_ms[side] = (per_frame, now)
            self._frames_by_side.clear()
            self._sample_at = (now, cpu, self._frames)
            self.delivered_fps = frames / (now - t0)
            side = self.working_side(self.requested_side) if self.requested_side else None
            step = self._measured_step(side, max(1, self.calls)) if side else None
            signals = self.latency_guard.signals(step)
            self.version += 1
        if side is not None and self.calls:
            unlimited = self.total_fps(self.calls, side, limited=False)
            self.latency_guard.update(signals, side, unlimited, self.delivered_fps, self.calls, now)
        self._adapt(now)

    @property
    def guard(self) -> float:
        """What the latency guard leaves of the measured bounds at the working side now (1 = no cut)."""
        side = self._default_side()
        if side is None or self.limit_fps is None or not self.calls:
            return 1.0
        unlimited = self.total_fps(self.calls, side, limited=False)
        limit = self.latency_guard.limit_at(side)
        return 1.0 if not unlimited or limit is None else round(min(1.0, limit / unlimited), 3)

    # ---- estimates ------------------------------------------------------------------------
    def _measured_step(self, side: int, batch: int) -> float | None:
        """Caller holds the lock: the step time at exactly `side` (batch extrapolated), None if never measured."""
        if self._config is None:
            return None
        got = self._step_at(side, batch, self._clock())
        return None if got is None else got[0]

    def _step_at(self, side: int, batch: int, now: float) -> tuple[float, float] | None:
        """(ms, when) of a step over `batch` calls at exactly `side` (batch extrapolated with no gain)."""
        engine, steps = self._config  # type: ignore[misc]
        measured = {b: m for (e, st, s, b), m in self._step_ms.items() if (e, st, s) == (engine, steps, side)}
        if not measured:
            return None
        trusted = {b: m for b, m in measured.items() if m.n >= TRUSTED_SAMPLES} or measured
        if batch in trusted:
            return trusted[batch].ms, trusted[batch].at
        below = [b for b in trusted if b < batch]
        base = max(below) if below else min(trusted)
        return trusted[base].ms * batch / base, trusted[base].at

    def _step_estimate(self, side: int, batch: int) -> tuple[float, bool] | None:
        """(step ms, fresh) at `side`: measured there, else guessed from the nearest side by pixel count."""
        now = self._clock()
        with self._lock:
            if self._config is None:
                return None
            engine, steps = self._config
            got = self._step_at(side, batch, now)
            if got is not None and now - got[1] <= self.options.reprobe_s:
                return got[0], now - got[1] <= self.options.fresh_s
            sides = {s for (e, st, s, _) in self._step_ms if (e, st) == (engine, steps)}
            recent = {s for s in sides if now - self._latest_at(s) <= self.options.reprobe_s} or sides
            if not recent:
                return None
            nearest = min(recent, key=lambda s: (abs(math.log(s / side)), -s))
            base = self._step_at(nearest, batch, now)
        assert base is not None
        return base[0] * (side / nearest) ** 2, False

    def _latest_at(self, side: int) -> float:
        engine, steps = self._config  # type: ignore[misc]
        return max(m.at for (e, st, s, _), m in self._step_ms.items() if (e, st, s) == (engine, steps, side))

    def _cpu_estimate(self, side: int) -> tuple[float, bool] | None:
        """(CPU ms per frame, fresh) at `side`, guessed by pixel count from the nearest side measured."""
        now = self._clock()
        with self._lock:
            if not self._cpu_ms:
                return None
            if side in self._cpu_ms:
                ms, at = self._cpu_ms[side]
                return ms, now - at <= self.options.fresh_s
            nearest = min(self._cpu_ms, key=lambda s: abs(math.log(s / side)))
            return self._cpu_ms[nearest][0] * (side / nearest) ** 2, False

    def step_ms(self, batch: int, side: int | None = None) -> float | None:
        """Measured (or extrapolated) time of a step over `batch` calls at `side` (default: the working side)."""
        side = side or self._default_side()
        if side is None:
            return None
        got = self._step_estimate(side, batch)
        return None if got is None else got[0]

    def estimate(
        self, calls: int, side: int | None = None, limited: bool = True, always_limited: bool = False
    ) -> Estimate | None:
        """Frames per second each of `calls` calls gets at `side` px (default: the working side now). `limited`:
        within the latency guard's limit when it cut lately (then it is a measurement); `always_limited`: within
        it anyway (stepping up: the slow start and the rate probed since are what is known to flow)."""
        calls = max(1, calls)
        side = side or self._default_side()
        if side is None:
            return None
        step = self._step_estimate(side, calls)
        if step is None:
            return None
        step_ms, fresh = step
        total = calls * 1000.0 / max(step_ms, 0.1)
        cpu = self._cpu_estimate(side)
        if cpu is not None:
            cpu_bound = self.cores * self.options.target_utilisation * 1000.0 / max(cpu[0], 0.01)
            if cpu_bound < total:
                total, fresh = cpu_bound, fresh and cpu[1]
        guard = self.latency_guard
        allowed = guard.limit_at(side) if always_limited or (limited and guard.congested()) else None
        if allowed is not None and allowed < total:
            total, fresh = allowed, side == guard.limit_side  # measured by the calls here and now
        return Estimate(total / calls, calls, side, fresh)

    def total_fps(self, calls: int, side: int | None = None, limited: bool = True) -> float | None:
        """Frames per second the device can turn around with `calls` calls; None before any step."""
        e = self.estimate(calls, side, limited)
        return None if e is None else e.fps * e.calls

    def share(self, calls: int | None = None, side: int | None = None) -> float:
        """Frames per second each of `calls` calls may send (at most `max_fps`): the bounds, within the guard's
        limit (the slow start included)."""
        calls = max(1, self.calls if calls is None else calls)
        side = side or self._default_side()
        e = self.estimate(calls, side) if side else None
        fps = (self.options.max_fps if self.limit_fps is not None else self.options.start_fps) if e is None else e.fps
        limit = self.latency_guard.limit_at(side) if side else self.limit_fps
        if limit is not None:
            fps = min(fps, limit / calls)
        return max(1.0, min(self.options.max_fps, fps))

    # ---- the working side -------------------------------------------------------------------
    def _default_side(self) -> int | None:
        return self.working_side(self.requested_side) if self.requested_side else None

    def working_side(self, requested: int) -> int:
        """The side a call asking for `requested` px is worked at now."""
        if self.cap is None or self.options.degradation == "maintain-resolution":
            return requested
        ladder = working_ladder(requested)
        return next((s for s in ladder if s <= self.cap), ladder[-1])

    def smallest_side(self, requested: int) -> int:
        if self.options.degradation == "maintain-resolution":
            return requested
        return working_ladder(requested)[-1]

    def target_fps(self) -> float:
        """What the working side is chosen to keep: `min_fps` (balanced) or `max_fps` (maintain-framerate)."""
        return self.options.max_fps if self.options.degradation == "maintain-framerate" else self.options.min_fps

    def _adapt(self, now: float) -> None:
        top = self.requested_side
        if top is None or self.calls == 0 or self.options.degradation == "maintain-resolution":
            return
        ladder = working_ladder(top)
        current = self.working_side(top)
        here = self.estimate(self.calls, current)
        if here is None:
            return
        target = self.target_fps()
        i = ladder.index(current)
        with self._lock:
            # a new side's step time is trusted after a few steps; a queue the guard just cut for needs no wait (a
            # real cut since the last change: with neither, -inf >= -inf read as one and let a first, cold step
            # decide)
            cut_at = self.latency_guard.cut_at
            cut_since_change = cut_at > -math.inf and cut_at >= self._changed_at
            measured_since_change = self._since_change[current] >= TRUSTED_SAMPLES or cut_since_change
        if here.fps < target * self.options.down_below and i + 1 < len(ladder) and measured_since_change:
            chosen = ladder[-1]
            for side in ladder[i + 1 :]:
                e = self.estimate(self.calls, side)
                if e is not None and e.fps >= target * self.options.down_margin:
                    chosen = side
                    break
            self._set_cap(chosen, top, now)
        elif i > 0 and now - self._changed_at >= self.options.dwell_s:
            up = self.estimate(self.calls, ladder[i - 1], always_limited=True)
            if up is not None and up.fps >= target * self.options.up_headroom:
                self._set_cap(ladder[i - 1], top, now)

    def _set_cap(self, side: int, top: int, now: float) -> None:
        with self._lock:
            self.cap = None if side >= top else side
            self._changed_at = now
            self._since_change.clear()
            self.version += 1

    # ---- admission --------------------------------------------------------------------------
    def room(self, calls: int | None = None) -> int:
        """How many more calls this server takes now (the rule `admission()` applies; see the module docstring)."""
        calls = self.calls if calls is None else calls
        most = max(1, self.options.max_calls)
        if calls <= 0:
            return most
        if self.requested_side is None:
            return max(0, most - calls)
        side = self.smallest_side(self.requested_side)
        n = calls
        while n < most:
            e = self.estimate(n + 1, side)
            if e is None or not e.fresh:
                return most - calls  # nothing measured here and now: never a reason to refuse
            if e.fps < self.options.min_fps * self.options.admit_margin:
                break
            n += 1
        return n - calls

    def full_message(self, calls: int | None = None) -> str:
        """What a refused caller is told: what this server can do now."""
        calls = max(1, self.calls if calls is None else calls)
        floor = self.options.min_fps
        side = self.smallest_side(self.requested_side or MIN_WORKING_SIDE)
        fits = 0
        for n in range(1, calls + 1):
            e = self.estimate(n, side)
            if e is None or e.fps < floor * self.options.admit_margin:
                break
            fits = n
        more = self.estimate(calls + 1, side)
        more_text = f"; one more would leave each about {more.fps:.1f} fps" if more is not None else ""
        if fits:
            plural = "s" if fits > 1 else ""
            return f"the server is full: it serves {fits} call{plural} at {floor:g} fps (at {side} px){more_text}"
        one = self.estimate(1, side)
        got = f"{one.fps:.1f}" if one is not None else "less"
        return f"the server is full: 1 call gets {got} fps at {side} px here, below the {floor:g} fps floor"

    def retry_after_s(self) -> int:
        """A polite wait before a refused caller tries again."""
        return max(2, min(30, math.ceil(5 * max(1, self.calls) / 4)))

    def summary(self, calls: int | None = None) -> dict[str, float | int | str | None]:
        """`/healthz` `capacity` (a cluster front door dispatches on `room`, `working_side`, `min_fps`)."""
        present = self.calls if calls is None else calls
        side = self._default_side()
        step = self.step_ms(max(1, self.calls))
        total = self.total_fps(self.calls)
        cpu = self._cpu_estimate(side) if side else None
        return {
            "calls": self.calls,
            "step_ms": None if step is None else round(step, 2),
            "cpu_ms_per_frame": None if cpu is None else round(cpu[0], 2),
            "total_fps": None if total is None else round(total, 2),
            "share_fps": round(self.share(), 2),
            "guard": round(self.guard, 3),
            "limit_fps": None if self.limit_fps is None else round(self.limit_fps, 2),
            "delivered_fps": round(self.delivered_fps, 2),
            "working_side": side,
            "requested_side": self.requested_side,
            "degradation": self.options.degradation,
            "min_fps": self.options.min_fps,
            "room": self.room(present),
        }

    @property
    def cpu_ms_per_frame(self) -> float | None:
        """CPU ms per frame at the working side now (measured, or guessed from another side)."""
        side = self._default_side()
        cpu = self._cpu_estimate(side) if side else None
        return None if cpu is None else cpu[0]
