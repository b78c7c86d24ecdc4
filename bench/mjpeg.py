"""What MJPEG viewers cost a live call.

One call (aiortc client, 30 fps, noisy test pattern so JPEGs are realistic ~20 KB) against `speakdraw serve`
with the passthrough engine. The call's own figures (fps_out and shown-frame age from its `stats` messages)
and the server's CPU use are measured with 0 viewers (the baseline, in the same run), then with N fast
MJPEG viewers and with N stalled viewers. Also: the JPEG encode cost per 512x512 frame in-process.

Prints a table and writes bench/results/mjpeg.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
from av import VideoFrame

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.routes.mjpeg import encode_jpeg  # noqa: E402
from tests.mjpeg_client import NoisyPatternTrack, read_parts  # noqa: E402
from tests.rtc_client import RtcClient, pattern_frame  # noqa: E402
from tests.serverproc import ServerProcess  # noqa: E402
from tests.test_mjpeg import SlowReader  # noqa: E402


def encode_cost(frames: int) -> dict:
    rng = np.random.default_rng(0)
    img = np.clip(pattern_frame(7).astype(np.int16) + rng.integers(-30, 30, (512, 512, 3)), 0, 255).astype(np.uint8)
    frame = VideoFrame.from_ndarray(img, format="rgb24")
    encode_jpeg(frame)
    times, sizes = [], []
    for _ in range(frames):
        t = time.perf_counter()
        sizes.append(len(encode_jpeg(frame)))
        times.append((time.perf_counter() - t) * 1000)
    return {"encode_ms_median": statistics.median(times), "jpeg_bytes": statistics.median(sizes)}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def window(call: RtcClient, pid: int, seconds: float) -> dict:
    while not call.messages.empty():
        call.messages.get_nowait()
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    fps, age = [], []
    while time.monotonic() - t0 < seconds:
        stats = await call.expect("stats", timeout=5)
        fps.append(stats["fps_out"])
        age.append(stats["shown_age_ms"])
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    return {"fps_out": statistics.mean(fps), "shown_age_ms": statistics.median(age), "server_cpu": cpu}


async def fast_viewer(url: str, counts: list[int], stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        async for _ in read_parts(resp):
            counts.append(1)
            if stop.is_set():
                return


async def run(seconds: float, viewers: list[int]) -> list[dict]:
    server = ServerProcess()
    server.wait_ready()
    rows = []
    try:
        call = RtcClient(server.base)
        call.video = NoisyPatternTrack(call.fps)
        await call.connect()
        await call.wait_frames(30)
        pid = server.proc.pid
        url = f"{server.base}/api/sessions/{call.session_id}/stream.mjpg"
        base = await window(call, pid, seconds)
        rows.append({"case": "no viewer (baseline)", "viewers": 0, **base, "parts_per_s_per_viewer": None})
        for n in viewers:
            counts: list[list[int]] = [[] for _ in range(n)]
            stop = asyncio.Event()
            tasks = [asyncio.create_task(fast_viewer(url, counts[i], stop)) for i in range(n)]
            await asyncio.sleep(1.0)
            for c in counts:
                c.clear()
            t0 = time.monotonic()
            w = await window(call, pid, seconds)
            rate = statistics.mean(len(c) for c in counts) / (time.monotonic() - t0)
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            rows.append({"case": f"{n} fast viewers", "viewers": n, **w, "parts_per_s_per_viewer": rate})

            readers = [SlowReader(url.removeprefix(server.base), server.port) for _ in range(n)]
            tasks = [asyncio.create_task(r.run()) for r in readers]
            await asyncio.sleep(1.0)
            w = await window(call, pid, seconds)
            for t in tasks:
                t.cancel()
            for r in readers:
                r.close()
            rows.append({"case": f"{n} stalled viewers", "viewers": n, **w, "parts_per_s_per_viewer": None})
        await call.close()
    finally:
        server.stop()
    for row in rows:
        row["fps_ratio"] = row["fps_out"] / base["fps_out"] if base["fps_out"] else None
        row["age_ratio"] = row["shown_age_ms"] / base["shown_age_ms"] if base["shown_age_ms"] else None
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measurement window per case")
    parser.add_argument("--viewers", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    enc = encode_cost(100)
    rows = asyncio.run(run(args.seconds, args.viewers))
    print(f"JPEG encode, 512x512 q85: {enc['encode_ms_median']:.2f} ms median, {enc['jpeg_bytes'] / 1024:.1f} KiB")
    header = f"{'case':<22} {'fps_out':>8} {'x base':>7} {'age ms':>8} {'x base':>7} {'srv CPU':>8} {'parts/s':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        parts = "" if r["parts_per_s_per_viewer"] is None else f"{r['parts_per_s_per_viewer']:.1f}"
        print(
            f"{r['case']:<22} {r['fps_out']:>8.1f} {r['fps_ratio']:>7.2f} {r['shown_age_ms']:>8.1f}"
            f" {r['age_ratio']:>7.2f} {r['server_cpu'] * 100:>7.0f}% {parts:>8}"
        )
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "mjpeg.json").write_text(json.dumps({"encode": enc, "rows": rows}, indent=2))
    print(f"wrote {out / 'mjpeg.json'}")


if __name__ == "__main__":
    main()
