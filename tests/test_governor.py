"""The per-call governor (server/governor.py): what one call is told and how its sender is held to it, on a fake
capacity clock with no network: the `send` hint, the working side applied to the call's pipeline, the status
lines, and the limit on a sender that ignores the hint."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from server.capacity import CapacityModel, CapacityOptions
from server.governor import CallGovernor
from server.tracks import RateMeter
from speakdraw.pipeline import Pipeline
from speakdraw.settings import Settings


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Stats:
    fps_in: RateMeter = field(default_factory=RateMeter)


@dataclass
class Relay:
    stats: Stats = field(default_factory=Stats)
    max_fps: float | None = None


@dataclass
class Call:
    pipeline: Pipeline
    id: str = "c0ffee00"
    relay: Relay | None = None
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def status_message(self, message: str | None = None) -> dict[str, Any]:
        return {"type": "status", "engine": "style", "ready": True, "message": message}


def governed(degradation: str = "balanced", settings: Settings | None = None):
    clock = Clock()
    capacity = CapacityModel(CapacityOptions(cores=2, degradation=degradation), clock=clock, cpu_clock=lambda: 0.0)
    call = Call(Pipeline(settings or Settings()))
    return CallGovernor(call, capacity), capacity, call, clock


def slow_second(capacity: CapacityModel, clock: Clock, side: int, ms: float = 256.0) -> None:
    for _ in range(4):
        capacity.step_done(engine="style", side=side, steps=1, batch=1, step_ms=ms * (side / 512) ** 2)
    clock.t += 1.0


def test_the_working_side_reaches_the_pipeline_the_hint_and_a_status_line():
    governor, capacity, call, clock = governed()
    capacity.calls_changed(1)
    governor.update()
    assert call.sent[-1]["type"] == "send" and call.sent[-1]["max_side"] == 512
    for _ in range(3):
        slow_second(capacity, clock, capacity.working_side(512))
        governor.tick({})
    side = capacity.working_side(512)
    assert side < 512 and call.pipeline.working_side == side
    assert call.pipeline.working_size() == (side, side)
    assert call.pipeline.current.width == 512  # the settings stay the upper bound
    hints = [m for m in call.sent if m["type"] == "send"]
    assert hints[-1]["max_side"] == side and hints[-1]["max_fps"] >= 8.0
    statuses = [m["message"] for m in call.sent if m["type"] == "status"]
    assert statuses == [f"working at {side} px to keep 8 fps (asked for 512 px)"]  # said once, not every second


def test_a_call_asking_for_less_than_the_working_side_keeps_its_own_size():
    governor, capacity, call, clock = governed(settings=Settings(width=256, height=192))
    capacity.calls_changed(1)
    capacity.cap = 320  # the device works the others at 320 px
    governor.update()
    assert call.pipeline.working_side is None and call.pipeline.working_size() == (256, 192)
    assert call.sent[-1]["max_side"] == 256


def test_maintain_resolution_says_once_that_the_frame_rate_fell():
    governor, capacity, call, clock = governed("maintain-resolution")
    capacity.calls_changed(1)
    for _ in range(3):
        slow_second(capacity, clock, 512)
        governor.tick({})
    assert call.pipeline.working_side is None
    statuses = [m["message"] for m in call.sent if m["type"] == "status"]
    assert len(statuses) == 1 and statuses[0].startswith("keeping 512 px at 3.9 fps, below 8 fps"), statuses


def test_a_sender_that_ignores_the_hint_is_limited_to_its_share_and_told():
    governor, capacity, call, clock = governed()
    call.relay = Relay()
    capacity.calls_changed(1)
    capacity.step_done(engine="passthrough", side=512, steps=1, batch=1, step_ms=2.0)
    governor.update()
    share = call.sent[-1]["max_fps"]
    start = time.monotonic() - 1.9
    for i in range(95):  # 50 fps over the meter's window, whatever it was asked
        call.relay.stats.fps_in.tick(start + i * 0.02)
    assert call.relay.stats.fps_in.rate() > 1.5 * share + 3
    governor.update()  # over: the clock starts
    assert call.relay.max_fps is None
    governor._over_hint_since -= 4.0  # ... and it stayed over for longer than IGNORE_AFTER_S
    governor.update()
    assert call.relay.max_fps == share
    assert "above the" in call.sent[-1]["message"] and "extra frames are dropped" in call.sent[-1]["message"]


def test_round_trips_and_loss_reach_the_guard():
    governor, capacity, call, clock = governed()
    governor.tick({"remote": {"round_trip_ms": 20.0, "fraction_lost": 0}})
    governor.tick({"remote": {"round_trip_ms": 220.0, "fraction_lost": 0.25}})  # 25 % lost
    assert list(capacity.latency_guard.paths) == [0.0, 200.0] and list(capacity.latency_guard.losses) == [0.0, 0.25]
