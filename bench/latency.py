"""Latency of the call path: server-side cost per frame, loopback round trip, overload.

Prints a table and writes bench/results/latency.json. Every figure comes with a baseline
measured in the same run (this machine is shared and noisy), and the load (`os.getloadavg`):
- server-side per-frame cost of the passthrough pipeline at 512×512 vs the bare
  yuv→rgb→yuv conversion that any aiortc transform pays;
- loopback round trip, passthrough at 512², one caller (tests/rtc_client.py: it encodes, decodes and
  renders every frame), through `speakdraw serve` with its default flags (`--video-codec auto`),
  with `--video-codec vp8` and with `--video-codec h264`, against the smallest aiortc echo server
  (bench/echo_server.py); the four take turns for `--rounds` rounds so load hits them alike. The goal:
  the default's p95 at most 0.7 × the echo's;
- overload (100 ms model, 30 fps in): age of the shown frame, first vs last 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

import numpy as np
from av import VideoFrame

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.device_runner import to_frame, to_rgb  # noqa: E402
from speakdraw import Pipeline, Settings  # noqa: E402
from tests.overload import run_overload  # noqa: E402
from tests.rtc_client import RtcClient, pattern_frame, read_frame_id  # noqa: E402
from tests.serverproc import ServerProcess, free_port  # noqa: E402


def pct(values, q) -> float:
    return float(np.percentile(values, q))


def server_side(frames: int) -> dict:
    pipeline = Pipeline(Settings(passthrough_effect="invert"))
    src = VideoFrame.from_ndarray(pattern_frame(1), format="rgb24").reformat(format="yuv420p")
    src.pts, src.time_base = 0, fractions.Fraction(1, 90000)
    conv, full = [], []
    for _ in range(frames):
        t = time.perf_counter()
        VideoFrame.from_ndarray(src.to_ndarray(format="rgb24"), format="rgb24")
        conv.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        to_frame(pipeline.process(to_rgb(src)), src)
        full.append((time.perf_counter() - t) * 1000)
    return {
        "baseline_conversion_p50_ms": pct(conv, 50),
        "baseline_conversion_p95_ms": pct(conv, 95),
        "passthrough_p50_ms": pct(full, 50),
        "passthrough_p95_ms": pct(full, 95),
        "ratio_p50": pct(full, 50) / pct(conv, 50),
    }


async def round_trip(base: str, seconds: float, inverted: bool) -> list[float]:
    client = RtcClient(base, fps=30.0, keep_frames=2, settings={"passthrough_effect": "invert"} if inverted else None)
    await client.connect()
    try:
        await client.wait_frames(10)
        ages, seen, start = [], client.frames_received, time.monotonic()
        while time.monotonic() - start < seconds:
            await asyncio.sleep(0.003)
            if client.frames_received != seen:
                seen = client.frames_received
                last = client.frames[-1]
                sent = client.video.sent_at.get(read_frame_id(last.image, inverted=inverted))
                if sent is not None:
                    ages.append((last.at - sent) * 1000)
        return ages
    finally:
        await client.close()


def wait_http(base: str, proc: subprocess.Popen) -> None:
    import urllib.request

    for _ in range(200):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("echo server died") from None
            time.sleep(0.1)


CONFIGS = {"default": (), "vp8": ("--video-codec", "vp8"), "h264": ("--video-codec", "h264")}


def load() -> float:
    return round(os.getloadavg()[0], 2)


async def main_async(args) -> dict:
    results: dict = {"server_side_512": server_side(args.frames), "load_at_start": load()}
    port = free_port()
    echo = subprocess.Popen([sys.executable, str(REPO / "bench" / "echo_server.py"), str(port)])
    servers = {name: ServerProcess(*flags) for name, flags in CONFIGS.items()}
    ages: dict[str, list[float]] = {name: [] for name in ("echo", *CONFIGS)}
    loads: list[float] = []
    try:
        wait_http(f"http://127.0.0.1:{port}", echo)
        for server in servers.values():
            server.wait_ready()
        for _ in range(args.rounds):
            ages["echo"] += await round_trip(f"http://127.0.0.1:{port}", args.seconds, inverted=False)
            loads.append(load())
            for name, server in servers.items():
                ages[name] += await round_trip(server.base, args.seconds, inverted=True)
                loads.append(load())
        echo_p95 = pct(ages["echo"], 95)
        results["round_trip"] = {
            name: {
                "p50_ms": round(pct(values, 50), 1),
                "p95_ms": round(pct(values, 95), 1),
                "p95_vs_echo": round(pct(values, 95) / echo_p95, 3),
                "frames": len(values),
            }
            for name, values in ages.items()
        }
        results["round_trip_load"] = {"min": min(loads), "max": max(loads)}
        results["video_codec_default"] = json.loads(
            urlopen(servers["default"].base + "/api/settings", timeout=5).read()
        )["server"]["video_codec"]
    finally:
        echo.terminate()
        echo.wait()
        for server in servers.values():
            server.stop()
    slow = ServerProcess("--simulate-model-ms", "100")
    try:
        slow.wait_ready()
        results["overload_100ms_30fps"] = (await run_overload(slow.base, seconds=args.overload_seconds)).summary()
    finally:
        slow.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=8.0, help="per configuration and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--overload-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latency.json")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    s, r, o = results["server_side_512"], results["round_trip"], results["overload_100ms_30fps"]
    print(
        f"server-side passthrough 512x512: p50 {s['passthrough_p50_ms']:.2f} ms, p95 {s['passthrough_p95_ms']:.2f} ms "
        f"(bare conversion p50 {s['baseline_conversion_p50_ms']:.2f} ms, {s['ratio_p50']:.2f}x)"
    )
    codec = results["video_codec_default"]
    print(f"default video codec: {codec['picked']} ({codec['reason']})")
    print(f"{'round trip, 512², 1 caller':30} {'p50 ms':>8} {'p95 ms':>8} {'p95 / echo':>11} {'frames':>7}")
    for name, row in r.items():
        label = "naive aiortc echo" if name == "echo" else f"speakdraw {name}"
        print(f"{label:30} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['p95_vs_echo']:>10}x {row['frames']:>7}")
    print(f"load (1-min average) during the round trips: {results['round_trip_load']}")
    print(
        f"overload: first 5 s p95 {o['first5s_p95_ms']:.1f} ms, last 5 s p95 {o['last5s_p95_ms']:.1f} ms, "
        f"fps in {o['fps_in']:.1f} / out {o['fps_out']:.1f}, dropped {o['dropped']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
