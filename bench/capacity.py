"""How many callers one device serves: batched steps vs round-robin, then real WebRTC callers.

Part 1 (`runner`): N simulated calls offer 30 fps each to one `DeviceRunner`, which either batches
the newest frame of every call into one step (`max_batch=N`, what the server does) or takes one call's
frame per step (`max_batch=1`: round-robin, what it did before) — same engine, same run. Reports per-call
and total fps, step time per batch size, frame age (arrival → result) p50/p95.

Part 2 (`calls`): real WebRTC callers through `speakdraw serve` with its default flags (no `--cpu-cores`):
- 8 callers at 512², 30 fps offered, honouring `send`, passthrough: per-caller fps, round trip, fairness,
  cross-talk, the working side; then the same with `--video-codec vp8`. The callers are tests/rtc_client.py's:
  they encode, decode and render every frame, in this process, on this machine (load the server cannot see);
- the offline default engine, `style`, at a requested 512²: one call (fps, working side), then a second
  call at the same time (served, both fps; or refused, and what it was told).
With `--before DIR` (an export of an older commit, e.g. `git archive 8566907 | tar -x -C DIR`), part 2 also
runs against that tree's server, in the same run, so before and after share the machine's load. Every row
carries the 1-minute load average at its end.

    python bench/capacity.py                      # CPU: passthrough and tiny at 256², then the real callers
    python bench/capacity.py --no-runner --before /tmp/adapt-before   # part 2 only, before and after
    python bench/capacity.py --engines tiny --full-size --device cuda --size 512 --no-calls   # a GPU machine
Prints a table and writes bench/results/capacity.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from av import VideoFrame

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.device_runner import DeviceRunner, Processed  # noqa: E402
from speakdraw.engines import EngineOptions, load_engine  # noqa: E402
from speakdraw.pipeline import Pipeline  # noqa: E402
from speakdraw.settings import Settings  # noqa: E402
from tests import serverproc  # noqa: E402
from tests.multicall import run_callers  # noqa: E402
from tests.rtc_client import RtcClient  # noqa: E402
from tests.serverproc import ServerProcess  # noqa: E402

PROMPTS = ["a watercolor dragon", "an oil painting of a city", "a pencil sketch", "neon cyberpunk street"]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    return f"CPU: {cpu_name()}"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def runner_point(engine, calls: int, batched: bool, size: int, seconds: float, fps: float) -> dict:
    """N calls at `fps` into one runner for `seconds`; returns the figures of that point."""
    runner = DeviceRunner(max_batch=calls if batched else 1, name="bench-video")
    frame = VideoFrame.from_ndarray(np.full((size, size, 3), 127, np.uint8), format="rgb24").reformat(format="yuv420p")
    frame.time_base = fractions.Fraction(1, 90000)
    ages: list[list[float]] = [[] for _ in range(calls)]
    steps: dict[int, list[float]] = defaultdict(list)
    done = [0] * calls
    start = time.monotonic()

    def deliver(i: int):
        def on(result: Processed) -> None:
            if result.error is not None:
                raise result.error
            if result.done - start > 1.0:  # the first second warms up
                done[i] += 1
                ages[i].append((result.done - result.arrived) * 1000.0)
                steps[result.batch].append(result.timings_ms["total"])

        return on

    pipelines = [
        Pipeline(Settings(width=size, height=size, prompt=PROMPTS[i % 4], seed=i, strength=0.4 + 0.1 * (i % 4)), engine)
        for i in range(calls)
    ]
    slots = [runner.register(p, deliver(i)) for i, p in enumerate(pipelines)]

    async def camera(i: int) -> None:
        n = 0
        while time.monotonic() - start < seconds + 1.0:
            slots[i].put(frame, time.monotonic())
            n += 1
            await asyncio.sleep(max(0.0, start + n / fps - time.monotonic()))

    await asyncio.gather(*(camera(i) for i in range(calls)))
    await asyncio.sleep(0.2)
    for slot in slots:
        slot.close()
    runner.shutdown(timeout=30)
    all_ages = [a for call in ages for a in call]
    per_call = [d / seconds for d in done]
    return {
        "calls": calls,
        "strategy": "batched" if batched else "round-robin",
        "fps_per_call_min": round(min(per_call), 2),
        "fps_per_call_mean": round(float(np.mean(per_call)), 2),
        "fps_total": round(sum(per_call), 2),
        "age_p50_ms": round(pct(all_ages, 50), 1),
        "age_p95_ms": round(pct(all_ages, 95), 1),
        "step_ms_by_batch": {b: round(pct(v, 50), 2) for b, v in sorted(steps.items())},
    }


def load(engine_name: str, device: str, full_size: bool, acceleration: str = "none", compile_mode: str | None = None):
    """`--full-size`: the `tiny` engine builds the full-size SD-Turbo architecture with random weights (same FLOPs)."""
    model = "full-size" if full_size and engine_name == "tiny" else engine_name
    extra = {"compile_mode": compile_mode} if compile_mode else {}
    options = EngineOptions(engine=engine_name, model=model, device=device, acceleration=acceleration, extra=extra)
    engine, warnings = load_engine(options)
    if warnings:
        print("warning:", *warnings)
    engine.warmup()
    return engine


async def runner_sweep(args) -> list[dict]:
    rows = []
    for name in args.engines:
        engine = load(name, args.device, args.full_size, args.acceleration, args.compile_mode)
        for calls in args.calls:
            for batched in (False, True):
                point = await runner_point(engine, calls, batched, args.size, args.seconds, args.fps)
                point.update(engine=engine.name, size=args.size)
                rows.append(point)
                print(
                    f"{engine.name:12} {args.size:4}² N={calls}  {point['strategy']:11}  "
                    f"per call {point['fps_per_call_min']:6.2f}–{point['fps_per_call_mean']:6.2f} fps  "
                    f"total {point['fps_total']:7.2f}  age p50 {point['age_p50_ms']:7.1f}  "
                    f"p95 {point['age_p95_ms']:7.1f} ms  step {point['step_ms_by_batch']}",
                    flush=True,
                )
    return rows


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


@contextlib.contextmanager
def server_of(tree: Path | None, *flags: str, **kwargs):
    """`speakdraw serve` from `tree` (None: this checkout), ready; stopped on exit."""
    saved = serverproc.REPO
    serverproc.REPO = tree or REPO
    try:
        server = ServerProcess(*flags, **kwargs)
    finally:
        serverproc.REPO = saved
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


async def eight_callers(tree: Path | None, seconds: float, *flags: str) -> dict:
    with server_of(tree, *flags) as server:
        run = await run_callers(server.base, callers=8, seconds=seconds, warmup_s=5.0)
    s = run.summary()
    s["load"] = load_avg()
    return s


async def delivered(client: RtcClient, seconds: float) -> tuple[float, list[int]]:
    start, first, sides = time.monotonic(), client.frames_received, set()
    while time.monotonic() - start < seconds:
        await asyncio.sleep(0.25)
        if client.frames:
            sides.add(max(client.frames[-1].image.shape[:2]))
    return round((client.frames_received - first) / (time.monotonic() - start), 2), sorted(sides)


async def style_calls(tree: Path | None, seconds: float) -> dict:
    """`--engine style` at the default 512²: one call, then a second at the same time."""
    out: dict = {}
    with server_of(tree, engine="style", matting="rvm") as server:
        first, second = RtcClient(server.base), RtcClient(server.base)
        try:
            await first.connect()
            await first.wait_frames(3, timeout=60)
            await asyncio.sleep(8.0)  # measured; the working side settled
            fps, sides = await delivered(first, seconds)
            out["one_call"] = {"fps": fps, "sides": sides, "load": load_avg()}
            try:
                await second.connect()
            except RuntimeError as exc:
                out["second_call"] = {"refused": str(exc)[:300], "load": load_avg()}
            else:
                await second.wait_frames(3, timeout=60)
                await asyncio.sleep(5.0)
                (f1, s1), (f2, s2) = await asyncio.gather(delivered(first, seconds), delivered(second, seconds))
                out["second_call"] = {"fps": [f1, f2], "sides": sorted({*s1, *s2}), "load": load_avg()}
            out["statuses"] = [m["message"] for m in first.all_messages if m.get("type") == "status"][-3:]
        finally:
            await first.close()
            await second.close()
    return out


def print_eight(label: str, s: dict) -> None:
    print(
        f"8 callers 512² {label:28}: fps/caller min {s['fps_min']:5.2f} total {s['fps_total']:6.1f}  "
        f"rtt p50 {s['rtt_p50_ms']:7.1f} p95 {s['rtt_p95_ms']:7.1f}  first5s p95 {s['first5s_p95_ms']:7.1f} "
        f"last5s p95 {s['last5s_p95_ms']:7.1f} ms  fairness {s['fairness']:.2f}  foreign {s['foreign_frames']}  "
        f"sides {s.get('working_sides')}  load {s['load']}",
        flush=True,
    )


async def calls_run(seconds: float, before: Path | None) -> dict:
    trees = {"after": None} if before is None else {"before": before, "after": None}
    out: dict = {}
    for label, tree in trees.items():
        for codec in ("default", "vp8"):
            flags = () if codec == "default" else ("--video-codec", "vp8")
            key = f"{label} {codec}"
            out[key] = await eight_callers(tree, seconds, *flags)
            print_eight(key, out[key])
    for label, tree in trees.items():
        out[f"style {label}"] = await style_calls(tree, 10.0)
        print(f"style 512² {label}: {out[f'style {label}']}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", default=["passthrough", "tiny"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="the full-size SD-Turbo architecture, random weights")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--acceleration", default="none", choices=["none", "compile"])
    parser.add_argument("--compile-mode", default=None)
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--no-calls", action="store_true", help="skip part 2 (real WebRTC callers)")
    parser.add_argument("--call-seconds", type=float, default=20.0)
    parser.add_argument("--no-runner", action="store_true", help="skip part 1 (the device runner sweep)")
    parser.add_argument("--before", type=Path, help="an older tree whose server part 2 also runs (same run)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "capacity.json")
    args = parser.parse_args()
    results: dict = {"device": device_name(args.device), "load_at_start": load_avg()}
    if not args.no_runner:
        results["runner"] = asyncio.run(runner_sweep(args))
    if not args.no_calls and args.device == "cpu":
        results["calls"] = asyncio.run(calls_run(args.call_seconds, args.before))
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"device: {results['device']}; wrote {out}")


if __name__ == "__main__":
    main()
