"""Several aiortc callers on one server at once: per-caller round trip, fps and cross-talk (tests and bench).

Each caller stamps its index in the top bits of every frame id it sends (`PatternVideoTrack(caller=i)`);
every frame it gets back must carry its own index, and its round trip is the time since that id was sent.
The callers are tests/rtc_client.py's: they encode, decode and (by default) render every frame, in one
process on this machine (see that module for how they compare with browsers).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tests.rtc_client import COUNT_BITS, RtcClient, read_frame_id


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class CallerRun:
    index: int
    ages_ms: list[tuple[float, float]] = field(default_factory=list)  # (s since start, round trip ms)
    age_sides: list[int] = field(default_factory=list)  # the long side of the frame of each `ages_ms` entry
    foreign: int = 0  # frames that carried another caller's id
    unreadable: int = 0  # frames whose id could not be matched (a diffusion engine repaints the id away)
    received: int = 0
    hints: list[dict] = field(default_factory=list)
    server_ages_ms: list[float] = field(default_factory=list)  # `stats.shown_age_ms`: arrival → handed to sender
    asked: list[tuple[float, float]] = field(default_factory=list)  # (s since start, fps the camera sends from then)
    sides: Counter = field(default_factory=Counter)  # long side of the frames received (the working side)

    def fps(self, seconds: float) -> float:
        return self.received / seconds

    def asked_fps(self, seconds: float) -> float:
        """The frame rate this caller's camera sent at over the window, time-weighted (what the server asked for,
        or the camera's own rate for a caller that ignores `send`)."""
        if not self.asked:
            return float("nan")
        points = [*self.asked, (seconds, self.asked[-1][1])]
        return sum((b[0] - a[0]) * a[1] for a, b in zip(points, points[1:], strict=False)) / seconds


@dataclass
class MultiRun:
    callers: list[CallerRun]
    seconds: float

    def _ages(self, start: float, end: float) -> list[float]:
        return [a for c in self.callers for t, a in c.ages_ms if start <= t < end]

    def p(self, q: float, start: float = 0.0, end: float = float("inf")) -> float:
        ages = self._ages(start, end)
        return float(np.percentile(ages, q)) if ages else float("nan")

    def halves_at_final_side(self, min_frames: int = 50) -> tuple[int, float, float]:
        """(side, median round trip at that side over the first half of the run, over the second half), at the
        side most frames of the second half had; when fewer than `min_frames` of the first half were at that side,
        the whole run's median there stands for the first half. A queue that grows moves the second half's median
        up. Judged at one side: a bigger picture costs every encoder and decoder more, so a run whose side stepped
        up part-way has a longer round trip after it with no queue at all."""
        middle = self.seconds / 2
        points = [(t, a, side) for c in self.callers for (t, a), side in zip(c.ages_ms, c.age_sides, strict=True)]
        second = [p for p in points if p[0] >= middle]
        if not second:
            return 0, float("nan"), float("nan")
        side = Counter(p[2] for p in second).most_common(1)[0][0]
        first = [a for t, a, s in points if s == side and t < middle]
        if len(first) < min_frames:
            first = [a for _, a, s in points if s == side]
        return side, round(_pct(first, 50), 1), round(_pct([a for _, a, s in second if s == side], 50), 1)

    def summary(self) -> dict:
        fps = [c.fps(self.seconds) for c in self.callers]
        return {
            "callers": len(self.callers),
            "fps_per_caller": [round(f, 2) for f in fps],
            "fps_min": round(min(fps), 2),
            "fps_total": round(sum(fps), 2),
            "fairness": round(min(fps) / max(fps), 3) if max(fps) > 0 else 0.0,
            "rtt_p50_ms": round(self.p(50), 1),
            "rtt_p95_ms": round(self.p(95), 1),
            "first5s_p95_ms": round(self.p(95, 0, 5), 1),
            "last5s_p95_ms": round(self.p(95, self.seconds - 5, self.seconds + 1), 1),
            "first_half_p50_ms": round(self.p(50, 0, self.seconds / 2), 1),
            "second_half_p50_ms": round(self.p(50, self.seconds / 2, self.seconds + 1), 1),
            "halves_p50_ms_at_final_side": self.halves_at_final_side(),
            "foreign_frames": sum(c.foreign for c in self.callers),
            "unreadable_frames": sum(c.unreadable for c in self.callers),
            "server_age_p50_ms": round(_pct([a for c in self.callers for a in c.server_ages_ms], 50), 1),
            "server_age_p95_ms": round(_pct([a for c in self.callers for a in c.server_ages_ms], 95), 1),
            "last_hint_fps": [c.hints[-1]["max_fps"] if c.hints else None for c in self.callers],
            "asked_fps_per_caller": [round(c.asked_fps(self.seconds), 2) for c in self.callers],
            "working_sides": dict(sum((c.sides for c in self.callers), Counter())),
        }


async def _watch(client: RtcClient, run: CallerRun, start: float, seconds: float) -> None:
    seen = client.frames_received
    while time.monotonic() - start < seconds:
        await asyncio.sleep(0.004)
        while not client.messages.empty():
            message = client.messages.get_nowait()
            if message.get("type") == "send":
                run.hints.append(message)
                run.asked.append((time.monotonic() - start, client.video.fps))
            elif message.get("type") == "stats" and message.get("shown_age_ms"):
                run.server_ages_ms.append(float(message["shown_age_ms"]))
        if client.frames_received == seen:
            continue
        run.received += client.frames_received - seen
        seen = client.frames_received
        last = client.frames[-1]
        side = max(last.image.shape[:2])
        run.sides[side] += 1
        frame_id = read_frame_id(last.image, sent_width=client.video.width)  # read to scale if worked smaller
        if frame_id >> COUNT_BITS != run.index:
            run.foreign += 1
            continue
        sent = client.video.sent_at.get(frame_id)
        if sent is None:
            run.unreadable += 1
            continue
        run.ages_ms.append((last.at - start, (last.at - sent) * 1000.0))
        run.age_sides.append(side)


async def run_callers(
    base: str,
    callers: int,
    seconds: float,
    fps: float = 30.0,
    settings: dict | None = None,
    ignore_send: frozenset[int] = frozenset(),
    warmup_s: float = 3.0,
) -> MultiRun:
    """`callers` calls at once; those in `ignore_send` keep sending `fps` whatever the server asks."""
    clients = [
        RtcClient(base, fps=fps, keep_frames=2, caller=i, honour_send=i not in ignore_send, settings=settings)
        for i in range(callers)
    ]
    runs = [CallerRun(i) for i in range(callers)]
    try:
        await asyncio.gather(*(c.connect() for c in clients))
        await asyncio.gather(*(c.wait_frames(3, timeout=60) for c in clients))
        await asyncio.sleep(warmup_s)  # let the capacity model measure and the hints settle
        for client in clients:
            client.video.sent_at = {k: v for k, v in client.video.sent_at.items() if k >> COUNT_BITS == client.caller}
        start = time.monotonic()
        for client, run in zip(clients, runs, strict=True):
            run.asked.append((0.0, client.video.fps))
        await asyncio.gather(*(_watch(c, r, start, seconds) for c, r in zip(clients, runs, strict=True)))
        return MultiRun(runs, seconds)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
