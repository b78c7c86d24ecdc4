"""The latency guard: the calls' total frame rate, run as congestion control runs a sending rate, for load that
the capacity model (server/capacity.py) cannot measure: the callers' own CPU, other programs on this machine.

The calls together may send `limit_fps` frames a second. It starts low (`start_fps` for the first call, `min_fps`
more for each that joins: a slow start; a lone call on an empty server starts at `solo_start_fps`, and gives the
difference back when calls join in its first `JOIN_SETTLED_S`). It is cut to 0.8 × what was turned around in that
second (a cut of what actually flows bites at once, however far off the model's bounds are), but never below half
of the most that flowed in the last `PEAK_S` seconds (a stall of one second — the callers' process busy elsewhere —
is not the device's rate: in a CI run one cluster worker's callers sat at 2.7 fps beside the other worker's 8.7),
nor below 1 fps a call, when the typical call's frames wait — queued before they reach us (TransitDelay), or in the
inbox — longer than a step should make them, when the typical call's RTCP round trip grows above its least
(queueing towards or inside the viewers), or when the viewers report heavy loss: two seconds in a row, or twice
over once. While the signals are clearly fresh and the calls use it, it grows by 10 % a second up to the model's
bounds; `HOLD_PROBE_S` after a cut (or after the signals began), in each second under the targets without reading
clearly fresh, by 5 % (one late second pauses that probe; it does not start the wait over, which on a jittery
machine kept a cut limit where it was for good). A cut counts as a measurement of the device for `fresh_s`
(`congested`); the slow start does not. It is dropped when the server empties.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from server.capacity_options import CapacityOptions

log = logging.getLogger(__name__)

FRESH = 0.25  # signals below this fraction of their targets are "clearly fresh": the rate grows by 10 % a second
JOIN_SETTLED_S = 5.0  # calls present this long (no join since) have a rate a new call may match
HOLD_PROBE_S = 5.0  # this long after a cut (or after signals began), in seconds under their targets but not
# clearly fresh (a machine whose jitter never lets them read fresh), the rate probes up by 5 % a second
CUT_HOLD_S = 2.0  # after a cut, only a queue twice the target cuts again within this time
PEAK_S = 3  # a cut keeps at least half of the most that flowed in this many samples (seconds)

Signals = list[tuple[float, float]]  # (measured, target) pairs of one sample


def _p75(values: deque[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, (3 * len(ordered)) // 4)]


class LatencyGuard:
    """Not locked on its own: the capacity model calls it under its lock, except `update` (the event loop's,
    about once a second), which reads the model's bounds and so must run outside it."""

    def __init__(self, options: CapacityOptions, clock: Callable[[], float]) -> None:
        self.options, self._clock = options, clock
        self.limit_fps: float | None = None  # total frames/s the calls may send, at `limit_side` px
        self.limit_side: int | None = None  # None: not tied to a side yet (the slow start)
        self.cut_at = -math.inf  # when it last cut (then its limit is a measurement of the device)
        self._held_since = -math.inf  # since when signals are read (the probe waits HOLD_PROBE_S from it or a cut)
        self._joined_at = -math.inf  # when a call last joined
        self._solo_extra = 0.0  # what a lone first call got above the shared slow start (until a join)
        self._over = 0  # samples in a row whose signals were over their targets
        self._flowed: deque[float] = deque(maxlen=PEAK_S)  # frames/s turned around in the last samples
        self.ages: dict[Any, deque[float]] = {}  # per call: how long its processed frames waited
        self.paths: deque[float] = deque(maxlen=64)
        self.losses: deque[float] = deque(maxlen=64)

    # ---- what it reads (the model's lock held) ----------------------------------------------
    def frame_age(self, age_ms: float, call: Any = None) -> None:
        self.ages.setdefault(call, deque(maxlen=120)).append(age_ms)

    def path_delay(self, excess_ms: float) -> None:
        self.paths.append(excess_ms)

    def path_loss(self, fraction: float) -> None:
        self.losses.append(fraction)

    def signals(self, step_ms: float | None) -> Signals:
        """This sample's (measured, target) pairs, and a fresh start for the next; a frame may wait up to a whole
        step in the inbox."""
        signals: Signals = []
        # each call's 75th percentile (a queue delays every frame, while a lost packet's recovery delays only the
        # frames it hit: 5 % loss made a p95 read "queue", and a median missed the swings of a queue in the
        # callers' own process), then the typical call's: one sender that queues its own frames (say, one that
        # ignores `send` and overloads itself) must not cut everyone's rate; a machine short of CPU delays them all
        per_call = sorted(_p75(ages) for ages in self.ages.values() if len(ages) >= 3)
        if per_call and sum(len(a) for a in self.ages.values()) >= 5:
            signals.append((per_call[len(per_call) // 2], self.options.wait_target_ms + (step_ms or 0.0)))
            self.ages.clear()
        if self.paths:
            paths = sorted(self.paths)  # the typical call's round-trip growth, not one outlier's
            signals.append((paths[len(paths) // 2], self.options.path_target_ms))
            self.paths.clear()
        if self.losses:
            losses = sorted(self.losses)
            signals.append((losses[len(losses) // 2], self.options.loss_target))
            self.losses.clear()
        return signals

    # ---- calls come and go (the model's lock held) ------------------------------------------
    def calls_changed(self, old: int, calls: int) -> None:
        if calls > old:  # the slow start: a new call gets what admission promised it, the floor ...
            first = self.limit_fps is None
            each = self.options.min_fps
            settled = self._clock() - self._joined_at >= JOIN_SETTLED_S
            if not first and old > 0 and settled and not self.congested():  # ... or, joining calls that have
                # run a while with no queue seen lately, what they get (up to the first call's start): one join,
                # or a worker's callers rejoining here, does not cut their rate
                each = max(each, min(self.options.start_fps, (self.limit_fps or 0.0) / old))
            if first:
                solo = calls == 1 and self.options.solo_start_fps > self.options.start_fps
                self._solo_extra = self.options.solo_start_fps - self.options.start_fps if solo else 0.0
                self.limit_fps = self.options.start_fps + self._solo_extra + (calls - 1) * each
            else:
                if not settled:  # joins while the first call's lone start stands: all start together, from the
                    # shared slow start
                    self.limit_fps = max(float(old), (self.limit_fps or 0.0) - self._solo_extra)
                self._solo_extra = 0.0
                self.limit_fps = (self.limit_fps or 0.0) + (calls - old) * each
            self._joined_at = self._clock()
        if calls == 0:  # nothing left to measure the load with: the next call starts afresh
            self.limit_fps, self.limit_side, self.cut_at = None, None, -math.inf
            self._held_since = -math.inf
            self._flowed.clear()
            self.ages.clear()
            self.paths.clear()
            self.losses.clear()

    # ---- the rate ---------------------------------------------------------------------------
    def limit_at(self, side: int) -> float | None:
        """The limit carried to `side` px: in proportion to the side, not to the pixel count (a guess on the safe
        side: what it stands for — the callers' encoders, decoders, their event loops — has a cost per frame that
        does not shrink with the picture). A square-root carry down was tried: it cut a call under 5 % loss beside
        a busy core to 8.6-9.0 fps (vs 10.8-12.3 with this), for no clear gain with 8 callers."""
        if self.limit_fps is None:
            return None
        if self.limit_side is None:
            return self.limit_fps
        return self.limit_fps * self.limit_side / side

    def congested(self) -> bool:
        """Whether it cut within `fresh_s`: its limit then measures what the device and the callers take."""
        return self._clock() - self.cut_at <= self.options.fresh_s

    def update(
        self, signals: Signals, side: int, unlimited: float | None, delivered_fps: float, calls: int, now: float
    ) -> None:
        """Cut the calls' total rate when frames or round trips queue; let it grow back while they clearly do not.
        `unlimited`: what the model's bounds allow at `side` (None before any step)."""
        allowed = self.limit_at(side)
        if unlimited is None or allowed is None:
            return
        over = any(value > target for value, target in signals)
        severe = any(value > 2 * target for value, target in signals)
        self._over = self._over + 1 if over else 0
        self._flowed.append(delivered_fps)
        if over and (severe or self._over >= 2):  # a queue that stays (one late second is noise), or a deep one
            if now - self.cut_at < CUT_HOLD_S and not severe:
                return  # the queue a cut left takes a moment to drain: do not cut again for the same one
            flowing = delivered_fps if delivered_fps > 0 else allowed
            cut = max(0.8 * min(flowing, allowed), 0.5 * min(max(self._flowed), allowed))
            self.limit_fps, self.limit_side, self.cut_at = max(float(calls), cut), side, now
        fresh = signals and all(value < FRESH * target for value, target in signals)
        log.debug(  # `--log-level debug`: what the guard read and did, once a second
            "guard: signals (value, target) %s, allowed %.1f fps, limit %.1f, delivered %.1f, side %d%s",
            [(round(v, 1), round(t)) for v, t in signals],
            allowed,
            self.limit_fps or 0.0,
            delivered_fps,
            side,
            " (cut)" if self.cut_at == now else "",
        )
        if not signals:  # nothing read: the hold starts again when signals come back
            self._held_since = -math.inf
        elif self._held_since == -math.inf:
            self._held_since = now
        used = delivered_fps > 0.6 * allowed
        if not over and fresh and used:
            # clearly fresh, and the calls use what they may: probe upwards slowly (latency stays flat)
            self.limit_fps, self.limit_side = min(allowed * 1.1, max(allowed, unlimited)), side
        elif not over and used and now - max(self._held_since, self.cut_at) >= HOLD_PROBE_S:
            # a while since the last cut, under the targets now, not clearly fresh: probe more slowly still; signals
            # over their targets pause it, two in a row cut again (without this, a limit cut on a jittery machine
            # never grows back)
            self.limit_fps, self.limit_side = min(allowed * 1.05, max(allowed, unlimited)), side
