"""Many callers, one device (issue 11): the capacity model, the `send` hint, admission, batched steps.

Unit tests of the model run on a fake clock; the call tests use real aiortc callers on loopback.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np
import pytest
from skimage import data

from server.capacity import CapacityModel, CapacityOptions
from speakdraw.engines import PassthroughEngine
from speakdraw.pipeline import Pipeline, process_frames
from speakdraw.settings import Settings
from tests.multicall import run_callers
from tests.rtc_client import RtcClient


class Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.cpu = 0.0

    def wall(self) -> float:
        return self.t

    def cpu_time(self) -> float:
        return self.cpu


def model(**options) -> tuple[CapacityModel, Clock]:
    """A model on a fake clock: 2 cores, the first call's slow start at 12 fps (the numbers below use it)."""
    clock = Clock()
    options = {"cores": 2, "start_fps": 12.0, "solo_start_fps": 12.0, **options}
    return CapacityModel(CapacityOptions(**options), clock=clock.wall, cpu_clock=clock.cpu_time), clock


def test_share_follows_the_measured_step_and_the_calls():
    capacity, _ = model()
    assert capacity.share(4) == 12.0  # nothing measured yet: the slow start
    capacity.calls_changed(4)
    assert capacity.limit_fps == 12.0 + 3 * 8.0  # the first call's start, then the floor for each that joined
    capacity.step_done(engine="tiny", side=256, steps=1, batch=4, step_ms=200.0)
    assert capacity.total_fps(4) == pytest.approx(20.0)  # 4 frames per 200 ms step
    assert capacity.share() == pytest.approx(5.0)
    # a batch never measured is extrapolated with no batching gain (errs low)
    assert capacity.step_ms(8) == pytest.approx(400.0)
    assert capacity.share(8) == pytest.approx(2.5)
    assert capacity.share(1) == pytest.approx(20.0)  # batch 1 scaled down linearly from 4: 50 ms


def test_a_lone_call_starts_at_the_cameras_rate_and_gives_it_back_when_others_join_at_once():
    """One caller on an empty server is not slowed by the slow start (its frame interval is part of its round
    trip); calls that join in its first seconds start together with it from the shared slow start."""
    capacity, clock = model(start_fps=20.0, solo_start_fps=30.0)
    capacity.calls_changed(1)
    assert capacity.limit_fps == 30.0
    assert capacity.share(1) == 30.0  # nothing measured yet: the lone start is what it may send
    clock.t = 1.0
    capacity.calls_changed(2)  # joins within JOIN_SETTLED_S: 20 for the first, the floor for the second
    assert capacity.limit_fps == 20.0 + 8.0
    capacity.calls_changed(0)
    capacity.calls_changed(3)  # three at once on an empty server: the shared slow start, no lone start
    assert capacity.limit_fps == 20.0 + 2 * 8.0
    capacity.calls_changed(0)
    clock.t = 10.0
    capacity.calls_changed(1)
    clock.t = 20.0  # the lone call ran 10 s with no queue seen: a join keeps its rate (what it would get anyway)
    capacity.calls_changed(2)
    assert capacity.limit_fps == 30.0 + 20.0


def test_the_cpu_spent_before_the_first_call_is_no_calls_cost():
    """Start-up (loading a model: seconds of CPU) is not charged to the first frames: before, 3 frames of tiny-sd15
    read 3.4 s of CPU each, predicted 0.5 fps and stepped the first call from 256 to 192 px at --min-fps 1."""
    capacity, clock = model(min_fps=1.0)
    clock.t, clock.cpu = 5.0, 7.0  # the server loaded its model: 7 s of CPU, no call yet
    capacity.calls_changed(1)
    for _ in range(4):
        capacity.step_done(engine="tiny", side=256, steps=1, batch=1, step_ms=200.0, requested=256)
    clock.t, clock.cpu = 6.0, 7.8  # the call's own cost: 0.8 s of CPU for 4 frames
    capacity.sample()
    assert capacity.cpu_ms_per_frame == pytest.approx(200.0)
    assert capacity.working_side(256) == 256  # 2 cores x 0.85 / 200 ms = 8.5 fps, far above 1 fps: no step down


def test_cpu_bound_and_latency_guard():
    capacity, clock = model(target_utilisation=0.5)
    capacity.calls_changed(2)
    capacity.step_done(engine="passthrough", side=512, steps=1, batch=2, step_ms=2.0)
    assert capacity.total_fps(2) == pytest.approx(1000.0)  # the device thread alone could do 1000 fps ...
    assert capacity.share(2) == 10.0  # ... but the calls start slowly: 12 + 8 fps between them
    clock.t, clock.cpu = 1.0, 0.5  # 0.5 s of CPU for the 2 frames of that step...
    for _ in range(49):  # ...and 49 more steps: 100 frames per 0.5 s CPU = 5 ms a frame
        capacity.step_done(engine="passthrough", side=512, steps=1, batch=2, step_ms=2.0)
        capacity.frame_age(5.0)  # fresh: each waited far less than a 2 ms step + 40 ms
    capacity.sample()
    assert capacity.cpu_ms_per_frame == pytest.approx(5.0)
    assert capacity.total_fps(2) == pytest.approx(2 * 0.5 * 1000 / 5.0)  # cores * utilisation / cost
    assert capacity.limit_fps == pytest.approx(20.0 * 1.1)  # fresh, and the calls used it: grown by 10 %
    for second in range(2, 40):  # the calls send what they may, and it stays fresh
        steps = int(capacity.limit_fps) // 2
        for _ in range(steps):
            capacity.step_done(engine="passthrough", side=512, steps=1, batch=2, step_ms=2.0)
            capacity.frame_age(5.0)
        clock.t = float(second)
        clock.cpu += steps * 2 * 0.005
        capacity.sample()
    assert capacity.limit_fps == pytest.approx(200.0)  # up to the CPU bound, no further
    assert capacity.guard == 1.0 and capacity.share(2) == 30.0  # capped at the camera
    limits = []
    for _ in range(3):
        for _ in range(30):  # 30 frames turned around in each of the next seconds ...
            capacity.step_done(engine="passthrough", side=512, steps=1, batch=1, step_ms=2.0)
            capacity.frame_age(900.0)  # ... each after waiting far longer than a 2 ms step + 40 ms
        clock.t += 1.0
        capacity.sample()
        limits.append(capacity.limit_fps)
    # frames got old (twice the target: a cut each second): the calls together may send 0.8 x what flows (30 fps),
    # however high the bounds are; one cut keeps half of the most that flowed in the last 3 s (a one-second stall
    # is not the device's rate), so it takes three seconds: 200 -> 100 -> 50 -> 24
    assert limits == pytest.approx([100.0, 50.0, 24.0]), limits
    assert capacity.share(2) == pytest.approx(12.0) and capacity.guard < 0.15
    for _ in range(20):
        capacity.step_done(engine="passthrough", side=512, steps=1, batch=1, step_ms=2.0)
        capacity.frame_age(5.0)
    clock.t += 1.0
    capacity.sample()
    assert capacity.limit_fps == pytest.approx(24.0 * 1.1)  # fresh again, and used: eased back, slowly


def test_round_trip_growth_cuts_capacity_like_waiting_frames():
    """Queueing towards a starved viewer shows only in its RTCP round trip: the guard cuts on it too."""
    capacity, clock = model(min_fps=0.5)  # (a floor this low keeps the working side: the guard alone here)
    capacity.calls_changed(3)
    for _ in range(10):
        capacity.step_done(engine="passthrough", side=512, steps=1, batch=3, step_ms=2.0)
    for excess in (5.0, 400.0, 420.0):  # most calls' round trips grew by 400 ms over their least
        capacity.path_delay(excess)
    clock.t = 1.0
    capacity.sample()  # 30 frames flowed in that second
    assert capacity.limit_fps == pytest.approx(0.8 * 13.0)  # 0.8 x the slow start's 12 + 0.5 + 0.5 fps
    for _ in range(10):
        capacity.step_done(engine="passthrough", side=512, steps=1, batch=3, step_ms=2.0)
    for excess in (0.0, 3.0, 600.0):  # one outlier does not cut (the median call decides)
        capacity.path_delay(excess)
    clock.t = 2.0
    capacity.sample()
    assert capacity.limit_fps == pytest.approx(0.8 * 13.0 * 1.1)
    capacity.calls_changed(0)
    assert capacity.limit_fps is None  # an empty server starts afresh


def test_one_late_second_is_noise_and_the_size_gives_before_the_frame_rate():
    capacity, clock = model(min_fps=8.0)
    capacity.calls_changed(1)

    def second(age_ms: float, frames: int = 12) -> None:
        for _ in range(frames):
            side = capacity.working_side(512)
            capacity.step_done(engine="passthrough", side=side, steps=1, batch=1, step_ms=2.0, requested=512)
            capacity.frame_age(age_ms)
        clock.t += 1.0
        capacity.sample()

    target = capacity.options.wait_target_ms + 2.0  # a frame may wait this long (the 2 ms step included)
    late, fresh = 1.5 * target, 0.1 * target  # over the target, not twice over it; clearly fresh
    second(fresh)
    assert capacity.limit_fps == pytest.approx(12.0 * 1.1)  # the slow start grows while frames are fresh
    second(late)  # over the target, once: noise (another program's burst), no cut
    assert capacity.limit_fps == pytest.approx(12.0 * 1.1)
    before = capacity.limit_fps
    second(late)  # twice in a row: a queue that stays
    assert capacity.limit_fps < before
    for _ in range(4):  # the queue stays: after the hold (a cut's queue takes a moment to drain), cut again
        second(late)
    assert capacity.limit_fps < 8.0 * (512 / capacity.working_side(512)) ** 2
    assert capacity.working_side(512) < 512  # below 8 fps a call: the size gives at once, with the frame rate
    for _ in range(3):
        second(fresh)  # fresh again at the smaller side: the rate grows back there
    assert capacity.limit_fps > 0.8 * 13.2 * 1.1


def test_a_cut_grows_back_on_a_jittery_machine_whose_signals_never_read_fresh():
    """Frames that wait half the target, never a quarter: no cut, and after HOLD_PROBE_S the limit probes up
    (5 % a second) all the same. Before, a limit cut on such a machine stayed where it was for good: a cluster
    worker's callers sat at 4.7 fps beside the other worker's 10."""
    from server.latency_guard import HOLD_PROBE_S

    capacity, clock = model(min_fps=1.0)
    capacity.calls_changed(1)
    target = capacity.options.wait_target_ms + 2.0

    def second(age_ms: float) -> None:
        for _ in range(max(1, int(capacity.share(side=512)))):  # the call sends what it may
            capacity.step_done(engine="passthrough", side=512, steps=1, batch=1, step_ms=2.0, requested=512)
            capacity.frame_age(age_ms)
        clock.t += 1.0
        capacity.sample()

    for _ in range(2):
        second(1.5 * target)  # a queue: cut
    cut = capacity.limit_fps
    assert cut < 20.0
    held = []
    for _ in range(int(HOLD_PROBE_S) + 3):
        second(0.5 * target)
        held.append(capacity.limit_fps)
    assert held[0] == pytest.approx(cut) and held[int(HOLD_PROBE_S) - 3] == pytest.approx(cut), held  # held first
    assert held[-1] > 1.1 * cut, held  # then probing up


def test_calls_that_ran_a_while_keep_their_rate_when_others_join():
    """Two calls settled at 10 fps each, no queue seen: two more join (a killed cluster worker's callers rejoining
    here) and get what those two get, so theirs is not cut (with the floor alone, 2 x 10 + 2 x 4 made 7 each).
    Calls that join together at the start still slow-start from the floor."""
    from server.latency_guard import JOIN_SETTLED_S

    capacity, clock = model(min_fps=4.0)
    capacity.calls_changed(1)
    capacity.calls_changed(2)  # at once: the first call's 12 (this model's start) + the floor
    assert capacity.limit_fps == pytest.approx(16.0)
    capacity.limit_fps = 20.0  # where the guard left it: 10 fps each
    clock.t += JOIN_SETTLED_S + 1.0
    capacity.calls_changed(4)
    assert capacity.limit_fps == pytest.approx(40.0)


def test_admission_floor():
    capacity, _ = model(min_fps=8.0, max_calls=50)
    assert capacity.room(0) == 50  # an empty server always admits
    capacity.calls_changed(1)
    assert capacity.room(1) == 49  # nothing measured: admit, measure
    capacity.step_done(engine="tiny", side=192, steps=1, batch=1, step_ms=50.0)  # 20 fps for one call at 192
    assert capacity.room(1) == 1  # 10 fps each for two; three would get 6.7 < 8
    assert capacity.room(2) == 0
    assert capacity.full_message(2).startswith("the server is full: it serves 2 calls at 8 fps (at 192 px)")


def simulate(capacity: CapacityModel, clock: Clock, seconds: int, cost, requested: int = 512, calls: int = 1) -> list:
    """`seconds` of calls that send what they are asked (their share) to a device whose step costs `cost(side,
    batch)` ms, at the working side the model picks; frames never wait long (no hidden load). The calls ask for
    `requested` px. Returns the working side after each second."""
    sides = []
    capacity.calls_changed(calls)
    for _ in range(seconds):
        side = capacity.working_side(requested)
        ms = cost(side, calls)
        steps = max(1, min(int(capacity.share(side=side)), int(1000 / ms)))
        for _ in range(steps):
            capacity.step_done(engine="style", side=side, steps=1, batch=calls, step_ms=ms, requested=requested)
            capacity.frame_age(10.0)
        clock.t += 1.0
        clock.cpu += 0.3  # a light CPU load: the device thread bounds
        capacity.sample()
        sides.append(capacity.working_side(requested))
    return sides


def style_like(side: int, batch: int) -> float:
    return batch * 256.0 * (side / 512) ** 2  # 256 ms at 512², cost by pixel count (like the style engine here)


def test_working_side_steps_down_to_keep_min_fps_and_stays_without_flapping():
    capacity, clock = model(min_fps=8.0)
    sides = simulate(capacity, clock, 40, style_like)
    # 512: 3.9 fps; 320: 10 fps; 256: 15.6 fps. Down to a side that keeps 8 fps with a margin, then steady:
    # 320 at 10 fps has no 1.6x headroom to go back to 384 (7.1 fps predicted), so it stays.
    assert sides[0] < 512 and sides[-1] in (256, 320), sides
    assert len(set(sides[5:])) == 1, sides  # no flapping once settled
    assert capacity.share(side=sides[-1]) >= 8.0
    assert all(s % 64 == 0 and s >= 192 for s in sides)


def test_working_side_steps_back_up_when_the_load_goes():
    capacity, clock = model(min_fps=8.0)
    slow = simulate(capacity, clock, 10, lambda side, b: 4 * style_like(side, b))  # a loaded device: 192 at best
    assert slow[-1] == 192, slow
    fast = simulate(capacity, clock, 90, lambda side, b: style_like(side, b) / 4)  # the load went away
    assert fast[-1] > 192 and fast == sorted(fast), fast  # back up, one 64 px step at a time, never down
    seq = [slow[-1], *fast]
    changes = [b - a for a, b in zip(seq, seq[1:], strict=False) if b != a]
    assert changes and all(c == 64 for c in changes), fast
    assert fast[-1] == 512  # a quarter of the cost: 15.6 fps at 512², with nothing left to gain


def test_maintain_resolution_keeps_the_size_and_lets_the_frame_rate_fall():
    capacity, clock = model(min_fps=8.0, degradation="maintain-resolution")
    sides = simulate(capacity, clock, 10, style_like)
    assert set(sides) == {512}
    assert capacity.share() == pytest.approx(1000 / 256, rel=0.01)  # 3.9 fps at 512
    assert capacity.room(1) == 0  # measured at its smallest (its only) size: a second call would get 2 fps


def test_maintain_framerate_aims_at_the_full_frame_rate():
    capacity, clock = model(min_fps=8.0, degradation="maintain-framerate")
    sides = simulate(capacity, clock, 10, style_like)
    assert sides[-1] == 192  # 192² at 36 ms: 28 fps, the most it can get; balanced would stop at 256-320


def test_stale_or_foreign_figures_refuse_nothing():
    """A measurement at another size, engine or step count, or from long ago, never refuses on its own."""
    capacity, clock = model(min_fps=8.0, max_calls=8, fresh_s=20.0)
    capacity.calls_changed(1)
    capacity.step_done(engine="style", side=512, steps=1, batch=1, step_ms=400.0, requested=512)
    assert capacity.estimate(2, 192) is not None and not capacity.estimate(2, 192).fresh  # a guess by pixel count
    assert capacity.room(1) == 7  # measured at 512 only: 192 is a guess, it refuses nothing
    capacity.step_done(engine="style", side=192, steps=1, batch=1, step_ms=400.0, requested=512)
    assert capacity.room(1) == 0  # measured at the smallest side now: a second call would get 1.25 fps
    clock.t += 21.0  # ... and long ago
    assert capacity.room(1) == 7
    capacity.step_done(engine="style", side=192, steps=2, batch=1, step_ms=400.0, requested=512)
    clock.t += 1.0
    capacity.step_done(engine="tiny", side=192, steps=1, batch=1, step_ms=10.0, requested=512)
    assert capacity.room(1) == 7  # another engine: its own figures (fast) decide
    capacity.calls_changed(0)
    capacity.step_done(engine="tiny", side=192, steps=1, batch=1, step_ms=5000.0, requested=512)
    assert capacity.room(0) == 8  # an empty server always admits


def test_extrapolates_an_unmeasured_side_by_pixel_count():
    capacity, _ = model()
    capacity.step_done(engine="style", side=512, steps=1, batch=1, step_ms=256.0, requested=512)
    assert capacity.step_ms(1, side=256) == pytest.approx(64.0)
    capacity.step_done(engine="style", side=256, steps=1, batch=1, step_ms=80.0, requested=512)
    assert capacity.step_ms(1, side=256) == pytest.approx(80.0)  # measured beats guessed
    assert capacity.step_ms(1, side=320) == pytest.approx(80.0 * (320 / 256) ** 2)  # from the nearest side


def test_summary_carries_what_a_cluster_dispatches_on():
    capacity, clock = model(min_fps=8.0, max_calls=8)
    simulate(capacity, clock, 10, style_like)
    s = capacity.summary()
    assert s["working_side"] in (256, 320) and s["min_fps"] == 8.0 and isinstance(s["room"], int)
    assert s["room"] == capacity.room(1)


def test_batched_frames_equal_each_call_alone():
    """Four calls in one step (human mode: one batched RVM run with each call's recurrent state) give exactly
    what each gets alone, frame after frame."""
    from speakdraw.matting import load_matting

    rvm = load_matting(progress=False)
    image = np.ascontiguousarray(data.astronaut()[::2, ::2])
    variants = [image, np.ascontiguousarray(image[:, ::-1]), np.roll(image, 30, axis=1), 255 - image]
    effects = ["invert", "none", "invert", "none"]

    def calls() -> list[Pipeline]:
        return [
            Pipeline(
                Settings(mode="human", width=256, height=256, passthrough_effect=e, matte_feather=2),
                engine=PassthroughEngine(),
                matting=rvm,
            )
            for e in effects
        ]

    alone, batched = calls(), calls()
    for step in range(4):
        frames = [np.roll(v, 5 * step, axis=0) for v in variants]
        expected = [p.process(f) for p, f in zip(alone, frames, strict=True)]
        got = [r.result() for r in process_frames(list(zip(batched, frames, strict=True)))]
        for e, g in zip(expected, got, strict=True):
            assert np.array_equal(e, g)
    assert [s.frames for s in (p._matting_session for p in batched)] == [4, 4, 4, 4]


def test_a_failing_call_does_not_take_the_batch_down():
    class Fails(PassthroughEngine):
        def process_batch(self, items):
            if any(frame[0, 0, 0] == 13 for _, frame in items):
                raise RuntimeError("pixel value 13 is cursed")
            return super().process_batch(items)

    engine = Fails()
    good, bad = (
        Pipeline(Settings(width=64, height=64), engine=engine),
        Pipeline(Settings(width=64, height=64), engine=engine),
    )
    frame = np.zeros((64, 64, 3), np.uint8)
    ok, failed = process_frames([(good, frame), (bad, frame + 13)])
    assert ok.error is None and ok.out.shape == (64, 64, 3)
    assert isinstance(failed.error, RuntimeError) and "cursed" in str(failed.error)


async def test_max_sessions_refuses_with_retry_after_even_when_offers_arrive_together(start_server):
    """10 offers at once against --max-sessions 2: exactly 2 calls, 8 refusals with 503 + Retry-After."""
    server = start_server("--max-sessions", "2")
    clients = [RtcClient(server.base) for _ in range(10)]
    results = await asyncio.gather(*(c.connect() for c in clients), return_exceptions=True)
    try:
        accepted = [r for r in results if r is None]
        refused = [r for r in results if isinstance(r, RuntimeError)]
        assert len(accepted) == 2 and len(refused) == 8, results
        assert all("503" in str(r) and "too_many_sessions" in str(r) for r in refused)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.base}/api/offer", json={"type": "offer", "sdp": "v=0"}) as resp:
                assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def offer_status(base: str, extra: dict | None = None) -> tuple[int, dict, dict]:
    """A bare offer (refused before its SDP is looked at when the server is full): status, body, headers."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/offer", json={"type": "offer", "sdp": "v=0", **(extra or {})}) as resp:
            return resp.status, await resp.json(), dict(resp.headers)


async def wait_capacity(server, where, timeout: float = 30.0) -> dict:
    """Poll `/healthz` until its `capacity` satisfies `where`."""
    deadline = time.monotonic() + timeout
    while True:
        capacity = server.health()["capacity"]
        if where(capacity):
            return capacity
        if time.monotonic() > deadline:
            raise TimeoutError(f"capacity never got there: {capacity}")
        await asyncio.sleep(0.5)


async def test_server_full_says_what_the_server_can_do_and_a_rejoin_is_never_refused(start_server):
    """A 200 ms model step (`--simulate-model-ms`: any frame size) at 192 px, the smallest working side (so the
    figures that refuse are measured where they refuse): two calls get 2.5 fps each, above --min-fps 1.6 with the
    admission margin (1.25 x); a third would get 1.7. The third is refused with what the server can do; a rejoin of
    a call present is not."""
    server = start_server("--simulate-model-ms", "200", "--min-fps", "1.6")
    settings = {"width": 192, "height": 192}
    first, second = RtcClient(server.base, settings=settings), RtcClient(server.base, settings=settings)
    rejoin = third = None
    try:
        await asyncio.gather(first.connect(), second.connect())  # together: the server has measured nothing yet
        await asyncio.gather(first.wait_frames(3), second.wait_frames(5))
        hint = await first.expect("send", where=lambda m: m["max_fps"] < 5, timeout=15)
        assert hint["max_side"] == 192 and hint["reason"]
        capacity = await wait_capacity(server, lambda c: c["room"] == 0)
        assert capacity["working_side"] == 192 and capacity["min_fps"] == 1.6, capacity
        status, body, headers = await offer_status(server.base)
        assert status == 503 and body["error"]["code"] == "server_full", body
        assert "serves 2 calls at 1.6 fps (at 192 px)" in body["error"]["message"], body
        assert int(headers["Retry-After"]) >= 1
        # the first caller's connection dropped: its rejoin takes over its own slot, never refused for capacity
        rejoin = RtcClient(server.base, settings=settings, offer_extra={"resume": first.session_id})
        await rejoin.connect()
        assert rejoin.answer["resumed"] is True and rejoin.session_id == first.session_id
        await rejoin.wait_frames(3)
        await second.close()
        await wait_capacity(server, lambda c: c["room"] >= 1)
        third = RtcClient(server.base, settings=settings)  # a slot freed: admitted again
        await third.connect()
        await third.wait_frames(2)
    finally:
        for client in (first, second, rejoin, third):
            if client is not None:
                await client.close(hang_up=client is not first)


async def test_sequential_calls_are_never_locked_out(start_server):
    """A model far below --min-fps at any size (300 ms a frame: 3.3 fps): each call is served when it comes alone;
    a second call at the same time is refused with what the server can do; once the server is empty, the next
    call is admitted again (before, the figure of the first call refused every later one, forever)."""
    server = start_server("--simulate-model-ms", "300")
    for _ in range(2):
        caller = RtcClient(server.base)
        await caller.connect()  # an empty server always admits
        try:
            await caller.wait_frames(3)
            capacity = await wait_capacity(server, lambda c: c["working_side"] == 192 and c["room"] == 0)
            assert capacity["total_fps"] < 8, capacity  # it stepped down as far as it goes, and still is below 8
            status, body, _ = await offer_status(server.base)
            assert status == 503 and body["error"]["code"] == "server_full", body
            assert "1 call gets" in body["error"]["message"] and "below the 8 fps floor" in body["error"]["message"]
        finally:
            await caller.close()
        await wait_capacity(server, lambda c: c["calls"] == 0 and c["room"] == 8)


async def test_a_guess_from_another_size_refuses_nothing(start_server):
    """One call gets 10 fps (100 ms a frame, any size), well above --min-fps 6, so nothing is ever measured at the
    smallest side: what two calls would get there is a guess, and a guess admits. (Before, the one-call figure
    refused the second call outright: 10 / 2 < 6.)"""
    server = start_server("--simulate-model-ms", "100", "--min-fps", "6")
    first, second = RtcClient(server.base), RtcClient(server.base)
    try:
        await first.connect()
        await first.wait_frames(5)
        capacity = await wait_capacity(server, lambda c: c["step_ms"] is not None and c["step_ms"] >= 90)
        assert capacity["working_side"] > 192 and capacity["room"] >= 1, capacity
        await second.connect()
        await second.wait_frames(3)
    finally:
        await first.close()
        await second.close()


# The server finds its working point in the first seconds of 8 calls (measured steps, the slow start, the working
# side's steps down); the tests judge the 20 s after it. bench/capacity.py reports the first seconds too.
WARMUP_S = 8.0


async def baseline_p95(base: str) -> float:
    """One caller alone on the same server, in the same run: its round-trip p95 (what the machine gives now)."""
    run = await run_callers(base, callers=1, seconds=5.0, warmup_s=2.0)
    return run.summary()["rtt_p95_ms"]


def assert_flat_fair_and_apart(s: dict, alone_p95: float) -> None:
    """The guard's promise, as ratios against this run (other work shares this machine's cores): no cross-talk; the
    round trip flat (the median of the second 10 s against the first's, at the working side of the second: a queue
    that grows moves the median, while a side that steps up lengthens every round trip with no queue — a
    fresh-clone run went 45 → 139 ms from 320 to 512 px; the guard's probes up and cuts back, a few seconds each,
    put single swings in one half or the other, which the p95 bound below covers) and its p95 within the issue's
    500 ms, or within 4 x one caller's alone on the same server + 150 ms when the machine is that slow; each caller
    gets about what the server asked it to send; nobody starved. The goal of >= 6 fps each is what
    bench/capacity.py reports with the load."""
    assert s["foreign_frames"] == 0, s
    _side, first, second = s["halves_p50_ms_at_final_side"]
    assert second <= 1.25 * first + 60, s
    assert s["rtt_p95_ms"] <= max(500.0, 4 * alone_p95 + 150), (s, alone_p95)
    assert s["fairness"] >= 0.8, s
    for got, asked in zip(s["fps_per_caller"], s["asked_fps_per_caller"], strict=True):
        assert got >= 0.7 * asked, s


@pytest.mark.slow
async def test_eight_callers_stay_flat_fair_and_apart(start_server):
    """8 callers at 512², 30 fps offered, honouring `send`, default flags (no --cpu-cores): the callers run on this
    machine, and their CPU is load the server cannot see; it reads it from frame ages and RTCP round trips. The
    callers decode and render every frame (tests/rtc_client.py says how they compare with a browser)."""
    server = start_server()
    alone = await baseline_p95(server.base)
    run = await run_callers(server.base, callers=8, seconds=20.0, warmup_s=WARMUP_S)
    s = run.summary()
    print("alone p95", alone, s, server.health()["capacity"])
    assert_flat_fair_and_apart(s, alone)


@pytest.mark.slow
async def test_a_caller_that_ignores_send_does_not_hurt_the_others(start_server):
    server = start_server()
    alone = await baseline_p95(server.base)
    run = await run_callers(server.base, callers=8, seconds=20.0, warmup_s=WARMUP_S, ignore_send=frozenset({7}))
    others = type(run)([c for c in run.callers if c.index != 7], run.seconds)
    s = others.summary()
    ignorer = run.callers[7]
    print("alone p95", alone, s, run.summary()["fps_per_caller"])
    assert_flat_fair_and_apart(s, alone)
    assert ignorer.asked_fps(run.seconds) == 30.0  # it kept sending 30 fps ...
    assert ignorer.fps(run.seconds) <= 1.5 * max(s["fps_per_caller"]) + 3, run.summary()  # ... the excess dropped
