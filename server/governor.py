"""One call's share of the device, in one place: its `send` hint, its working size, the limit on a sender
that ignores the hint, and its round trip fed to the capacity guard (server/capacity.py decides for the
device; this applies it to one call and tells the caller).

`Session` calls `tick(network)` once a second from its stats loop and `update(force=True)` when the call's
width/height change. What the caller hears:
- `{"type":"send","max_fps","max_side","reason"}` when the call starts and whenever its share moved by more
  than `HINT_CHANGE` or its working side changed (the page applies it to its camera's sender);
- a `status` line when the working side steps down ("working at 320 px to keep 8 fps") or back up, and,
  with `--degradation maintain-resolution`, when the frame rate falls below `--min-fps`;
- a `status` line when it ignores the hint: then its frames beyond its share are dropped on arrival.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any, Protocol

from server.capacity import CapacityModel

if TYPE_CHECKING:
    from server.tracks import FrameRelay
    from speakdraw.pipeline import Pipeline

log = logging.getLogger(__name__)

HINT_CHANGE = 0.15  # a share that moved by more than this fraction is sent again
IGNORE_FACTOR = 1.5  # a sender above hint * this (+ 3 fps) for IGNORE_AFTER_S is ignoring it
IGNORE_AFTER_S = 3.0


class GovernedCall(Protocol):
    """What the governor needs of a call (server/session.py's `Session`)."""

    id: str
    pipeline: Pipeline
    relay: FrameRelay | None

    def send(self, message: dict[str, Any]) -> None: ...

    def status_message(self, message: str | None = None) -> dict[str, Any]: ...


class CallGovernor:
    def __init__(self, call: GovernedCall, capacity: CapacityModel) -> None:
        self.call = call
        self.capacity = capacity
        self.hint: dict[str, Any] | None = None  # the last `send` message
        self._over_hint_since: float | None = None
        self._min_rtt_ms = math.inf  # the least RTCP round trip of this call so far
        self._told_side: int | None = None  # the reduced working side the caller was last told of
        self._told_slow = False  # maintain-resolution: told that the frame rate fell below the floor

    def tick(self, network: dict[str, Any] | None) -> None:
        """Once a second: sample the device's capacity, feed it this call's round trip, re-send the hint if it moved."""
        self.capacity.sample()
        self._path_delay(network or {})
        self.update()

    def update(self, force: bool = False) -> None:
        """Apply the device's working side to this call, send `send` when the share or the size moved, and check
        that the sender honours it."""
        capacity = self.capacity
        settings = self.call.pipeline.current
        requested = max(settings.width, settings.height)
        side = capacity.working_side(requested)
        self.call.pipeline.working_side = side if side < requested else None
        share = capacity.share(side=side)
        old = self.hint
        if (
            force
            or old is None
            or abs(share - old["max_fps"]) > HINT_CHANGE * old["max_fps"]
            or old["max_side"] != side
        ):
            calls = max(1, capacity.calls)
            self.hint = {
                "type": "send",
                "max_fps": round(share, 1),
                "max_side": side,
                "reason": f"{calls} call{'s' if calls > 1 else ''} share this device; frames are made at {side} px",
            }
            self.call.send(self.hint)
        self._tell_size(side, requested, share)
        self._check_sender(share)

    def _tell_size(self, side: int, requested: int, share: float) -> None:
        """A status line when the working side changes, and (maintain-resolution) when the frame rate falls."""
        target = self.capacity.target_fps()
        if side < requested and side != self._told_side:
            self._told_side = side
            text = f"working at {side} px to keep {target:g} fps (asked for {requested} px)"
            log.info("session %s: %s", self.call.id[:8], text)
            self.call.send(self.call.status_message(text))
        elif side >= requested and self._told_side is not None:
            self._told_side = None
            self.call.send(self.call.status_message(f"back to {side} px"))
        if self.capacity.options.degradation != "maintain-resolution":
            return
        floor = self.capacity.options.min_fps
        if share < floor and not self._told_slow:
            self._told_slow = True
            text = f"keeping {requested} px at {share:.1f} fps, below {floor:g} fps (--degradation maintain-resolution)"
            self.call.send(self.call.status_message(text))
        elif share >= 1.2 * floor:
            self._told_slow = False

    def _check_sender(self, share: float) -> None:
        relay = self.call.relay
        if relay is None or self.hint is None:
            return
        now = time.monotonic()
        rate = relay.stats.fps_in.rate()
        if rate <= share * IGNORE_FACTOR + 3.0:
            self._over_hint_since = None
            if relay.max_fps is not None:
                relay.max_fps = share  # keep its limit at its share
            return
        if self._over_hint_since is None:
            self._over_hint_since = now
        elif now - self._over_hint_since > IGNORE_AFTER_S and relay.max_fps is None:
            relay.max_fps = share
            log.info("session %s ignores the send hint (%.1f fps > %.1f): limiting it", self.call.id[:8], rate, share)
            text = f"this sender sends {rate:.0f} fps, above the {share:.0f} fps asked for: extra frames are dropped"
            self.call.send(self.call.status_message(text))
        elif relay.max_fps is not None:
            relay.max_fps = share

    def _path_delay(self, network: dict[str, Any]) -> None:
        """Feed the capacity guard what the viewer's receiver reports say: this call's round trip above its least
        (queueing on the way out, or in a viewer too busy to read its socket) and the fraction of packets lost."""
        remote = network.get("remote") or {}
        rtt = remote.get("round_trip_ms")
        if rtt is None:
            return
        self._min_rtt_ms = min(self._min_rtt_ms, rtt)
        self.capacity.path_delay(rtt - self._min_rtt_ms)
        self.capacity.path_loss(float(remote.get("fraction_lost") or 0.0))  # 0..1 (server/netstats.py)
