"""Call churn against a running server: connect, see frames, hang up (or just go away), `parallel` at a time.

Shared by `tests/test_churn.py` (the suite's plateau check) and `bench/churn.py` (the 1,000-cycle RSS trail).
The cycles run in rounds of `every`; after each round the server settles (no session, no peer connection),
gets `PAUSE_S` more for its after-call work (server/memory.py trims within 2 s), and its resident memory is
read from `/proc/<pid>/status`, so every point of the trail is taken in the same state and growth between
points is what the calls left behind.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.rtc_client import RtcClient

PAUSE_S = 3.0
POOL_SIZES = {"speakdraw-codec": 4}  # ThreadPoolExecutor sizes in server/workers.py (others have one thread)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


def health(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "/healthz", timeout=5) as resp:
        return json.loads(resp.read())


async def cycle(base: str, i: int) -> None:
    """One call: 256² at 15 fps, two frames back, then a hang-up; every fourth call just goes away."""
    client = RtcClient(base, fps=15, settings={"width": 256, "height": 256}, keep_frames=1, caller=i % 8)
    client.video.width = client.video.height = 256
    try:
        await client.connect()
        await client.wait_frames(2, timeout=30)
    finally:
        await client.close(hang_up=i % 4 != 3)  # the ICE/DTLS teardown path


def assert_threads_back(baseline: dict[str, Any], after: dict[str, Any]) -> None:
    """Threads outside our pools are back to the baseline (aiortc/aioice start none that outlive a call); our
    pools (server/workers.py) may have grown to their size, never a thread per call."""
    others = after["threads"] - len(after["worker_threads"])
    assert others <= baseline["threads"] - len(baseline["worker_threads"]), (baseline, after)
    pools = collections.Counter(name.rsplit("_", 1)[0] for name in after["worker_threads"])
    assert all(count <= POOL_SIZES.get(pool, 1) for pool, count in pools.items()), pools


async def settled(base: str, timeout: float) -> dict[str, Any]:
    """/healthz once no session and no peer connection is left (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        now = await asyncio.to_thread(health, base)
        if now["sessions"] == 0 and now["peer_connections"] == 0 or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.25)


@dataclass
class Trail:
    """RSS after each round: `points[k] = (cycles done, MB)`; failures and the peak concurrency seen."""

    parallel: int
    points: list[tuple[int, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    peak_parallel: int = 0
    seconds: float = 0.0
    health_before: dict[str, Any] = field(default_factory=dict)
    health_after: dict[str, Any] = field(default_factory=dict)
    native: list[tuple[int, float, float]] = field(default_factory=list)  # bench/churn.py --native

    def growth_mb(self, since_cycle: int) -> float:
        """RSS at the end minus RSS at the first point at or after `since_cycle`."""
        start = next(mb for done, mb in self.points if done >= since_cycle)
        return self.points[-1][1] - start

    def last_half_growth_mb(self) -> float:
        return self.growth_mb(self.points[-1][0] // 2)

    def trend_mb(self, since_cycle: int) -> float:
        """Growth from `since_cycle` to the end along the least-squares line through those points (one
        noisy point, e.g. a call's buffers still held, moves it less than it moves the endpoints)."""
        xs, ys = zip(*[(done, mb) for done, mb in self.points if done >= since_cycle], strict=True)
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
        return slope * (xs[-1] - xs[0])

    def last_half_trend_mb(self) -> float:
        return self.trend_mb(self.points[-1][0] // 2)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cycles": self.points[-1][0] if self.points else 0,
            "parallel": self.parallel,
            "peak_parallel": self.peak_parallel,
            "seconds": round(self.seconds, 1),
            "failures": self.failures,
            "rss_mb": [[done, round(mb, 1)] for done, mb in self.points],
            "growth_mb": round(self.points[-1][1] - self.points[0][1], 1) if self.points else 0.0,
            "last_half_growth_mb": round(self.last_half_growth_mb(), 1) if len(self.points) > 1 else 0.0,
            "last_half_trend_mb": round(self.last_half_trend_mb(), 1) if len(self.points) > 2 else 0.0,
            "health_before": self.health_before,
            "health_after": self.health_after,
        }


async def run(
    base: str, pid: int, cycles: int, parallel: int = 4, every: int = 50, on_point=None, settle_s: float = 40.0
) -> Trail:
    """`cycles` calls, `parallel` at a time, in rounds of `every`; the first point is before any call."""
    trail = Trail(parallel)
    sem = asyncio.Semaphore(parallel)
    now = {"calls": 0}

    async def one(i: int) -> None:
        async with sem:
            now["calls"] += 1
            trail.peak_parallel = max(trail.peak_parallel, now["calls"])
            try:
                await cycle(base, i)
            except Exception as exc:
                trail.failures.append(f"cycle {i}: {type(exc).__name__}: {exc}")
            finally:
                now["calls"] -= 1

    trail.health_before = await settled(base, settle_s)
    await asyncio.sleep(PAUSE_S)
    trail.points.append((0, rss_mb(pid)))
    start = time.monotonic()
    done = 0
    while done < cycles:
        batch = min(every, cycles - done)
        await asyncio.gather(*(one(done + i) for i in range(batch)))
        done += batch
        trail.health_after = await settled(base, settle_s)
        await asyncio.sleep(PAUSE_S)
        trail.points.append((done, rss_mb(pid)))
        if on_point is not None:
            on_point(trail)
    trail.seconds = time.monotonic() - start
    return trail
