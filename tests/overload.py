"""Drive a call whose model is slower than the camera and record how old each shown frame is."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from tests.rtc_client import RtcClient, read_frame_id


@dataclass
class OverloadRun:
    ages_ms: list[tuple[float, float]]  # (seconds since start, age of the received frame in ms)
    fps_in: float
    fps_out: float
    dropped: int
    duration_s: float

    def window_p95(self, start_s: float, end_s: float) -> float:
        ages = [a for t, a in self.ages_ms if start_s <= t < end_s]
        return float(np.percentile(ages, 95)) if ages else float("nan")

    def summary(self) -> dict:
        ages = np.array([a for _, a in self.ages_ms])
        return {
            "frames_received": len(ages),
            "age_p50_ms": float(np.percentile(ages, 50)),
            "age_p95_ms": float(np.percentile(ages, 95)),
            "first5s_p95_ms": self.window_p95(0, 5),
            "last5s_p95_ms": self.window_p95(self.duration_s - 5, self.duration_s + 1),
            "fps_in": self.fps_in,
            "fps_out": self.fps_out,
            "dropped": self.dropped,
        }


async def run_overload(base: str, seconds: float = 20.0, fps: float = 30.0, honour_send: bool = True) -> OverloadRun:
    """Client-side round trip: each received frame's id is matched to when that id was sent. With
    `honour_send=False` the camera keeps its rate whatever the server's `send` hint says."""
    client = RtcClient(base, fps=fps, keep_frames=2, honour_send=honour_send)
    await client.connect()
    try:
        await client.wait_frames(3)
        start = time.monotonic()
        ages: list[tuple[float, float]] = []
        seen = client.frames_received
        stats = None
        while time.monotonic() - start < seconds:
            await asyncio.sleep(0.005)
            if client.frames_received != seen:
                seen = client.frames_received
                last = client.frames[-1]
                sent = client.video.sent_at.get(read_frame_id(last.image))
                if sent is not None:
                    ages.append((last.at - start, (last.at - sent) * 1000.0))
            while not client.messages.empty():
                message = client.messages.get_nowait()
                if message.get("type") == "stats":
                    stats = message
        assert stats is not None, "no stats message during the run"
        return OverloadRun(ages, stats["fps_in"], stats["fps_out"], stats["dropped"], seconds)
    finally:
        await client.close()
