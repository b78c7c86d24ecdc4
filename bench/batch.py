"""Benchmark: N calls batched into one diffusion step vs the same N calls one by one, same run.

Each of the N sessions has its own prompt, seed and strength (issue 11). Two sets of N
sessions see the same frames in the same order: one set goes through
`DiffusionEngine.process_batch` (one VAE encode, one UNet call, one decode per step),
the other through `session.process` one after the other (round-robin, today's path).
Short rounds alternate between the two so load from other processes hits both alike;
fps come from the median step time. Reports total frames per second, step time per
batch size, the speed-up, and how far the
batched outputs are from the one-by-one outputs (max / mean |Δ| per uint8 pixel).

    python bench/batch.py                                   # CPU, tiny model, 256x256, N = 1 2 4 8
    python bench/batch.py --model tiny-sdxl                 # the SDXL-shaped tiny model
    python bench/batch.py --full-size --device cuda --size 512 --steps 1     # SD-Turbo architecture, fp16
    python bench/batch.py --full-size sdxl --device cuda --size 512 --steps 1  # SDXL-Turbo architecture

--full-size builds the real architecture with random weights (same FLOPs, no download).
Prints a table and writes JSON to bench/results/ (or --json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speakdraw.diffusion import DiffusionEngine, build_components, load_diffusion_engine  # noqa: E402
from speakdraw.diffusion.acceleration import apply_acceleration  # noqa: E402
from speakdraw.diffusion.families import detect_family  # noqa: E402
from speakdraw.engines import EngineOptions  # noqa: E402
from speakdraw.settings import Settings  # noqa: E402

PROMPTS = ["a watercolor painting", "an oil painting", "a pencil sketch", "neon cyberpunk", "a marble statue"]


def camera_frames(size: int, count: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Moving, textured frames; each session gets its own (seed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 // size, yy * 255 // size, (xx + yy) * 127 // (2 * size) + 64], -1).astype(np.int16)
    frames = []
    for i in range(count):
        shift = i * size // (4 * count)
        rgb = base + rng.integers(-20, 20, base.shape, dtype=np.int16)
        rgb[size // 4 + shift : size // 2 + shift, size // 3 : size // 2] = 220
        frames.append(rgb.clip(0, 255).astype(np.uint8))
    return frames


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def session_settings(k: int, args) -> Settings:
    return Settings(
        prompt=PROMPTS[k % len(PROMPTS)] + f" #{k}",
        seed=100 + k,
        strength=min(0.9, args.strength + 0.05 * (k % 4)),
        steps=args.steps,
        width=args.size,
        height=args.size,
        prompt_fade_frames=0,
    )


def build_engine(args, device: torch.device, dtype: torch.dtype) -> DiffusionEngine:
    if args.full_size:
        kind = "full-size-sdxl" if args.full_size == "sdxl" else "full-size"
        components = build_components(kind, device=device)
        engine = DiffusionEngine(components, name=kind, model_id=f"{kind} (random)", device=device, dtype=dtype)
        engine.family = detect_family(components.unet.config)
        apply_acceleration(engine, args.acceleration, (args.size, args.size), args.compile_mode)
        engine.warmup()  # the compile happens here, on this thread
        return engine
    options = EngineOptions(
        engine="tiny",
        model=args.model,
        device=str(device),
        acceleration=args.acceleration,
        extra={"dtype": str(dtype).replace("torch.", ""), "warmup_size": (args.size, args.size)},
    )
    return load_diffusion_engine(options)


def measure(engine: DiffusionEngine, n: int, args, device: torch.device) -> dict:
    frames = [camera_frames(args.size, seed=k) for k in range(n)]
    batched = [engine.new_session(session_settings(k, args)) for k in range(n)]
    single = [engine.new_session(session_settings(k, args)) for k in range(n)]
    step: dict[str, list[float]] = {"batched": [], "one_by_one": []}
    last: dict[str, list[np.ndarray]] = {}
    diffs: list[tuple[int, float]] = []

    def run(which: str, first: int, count: int, record: bool) -> None:
        for i in range(first, first + count):
            inputs = [frames[k][i % len(frames[k])] for k in range(n)]
            sync(device)
            start = time.perf_counter()
            if which == "batched":
                outs = engine.process_batch(list(zip(batched, inputs, strict=True)))
            else:
                outs = [s.process(x) for s, x in zip(single, inputs, strict=True)]
            sync(device)
            if record:
                step[which].append(time.perf_counter() - start)
            last[which] = outs

    for which in ("batched", "one_by_one"):  # warm-up: both sets see the same frames
        run(which, 0, args.warmup, record=False)
    first, per_round = args.warmup, max(1, args.frames // args.rounds)
    for _ in range(args.rounds):
        for which in ("batched", "one_by_one"):
            run(which, first, per_round, record=True)
        first += per_round
        for a, b in zip(last["batched"], last["one_by_one"], strict=True):
            d = np.abs(a.astype(np.int16) - b.astype(np.int16))
            diffs.append((int(d.max()), float(d.mean())))
    result = {}
    for which, times in step.items():
        total = sum(times)
        median = statistics.median(times)
        # fps from the median step: robust to load spikes from other processes on a shared machine
        result[which] = {
            "steps": len(times),
            "step_ms_p50": median * 1000.0,
            "total_fps": n / median,
            "per_call_fps": 1.0 / median,
            "total_fps_mean": n * len(times) / total,
        }
    result["speedup"] = result["batched"]["total_fps"] / result["one_by_one"]["total_fps"]
    result["max_abs_diff"] = max(d for d, _ in diffs)
    result["mean_abs_diff"] = max(m for _, m in diffs)
    for s in batched + single:
        s.close()
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny model: tiny, tiny-sd15, tiny-sdxl")
    p.add_argument("--full-size", nargs="?", const="sd", choices=["sd", "sdxl"], default=None, help="real architecture")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="float16 / float32 (default: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--acceleration", default="none", choices=["none", "xformers", "compile"])
    p.add_argument("--compile-mode", default=None)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--strength", type=float, default=0.5)
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--frames", type=int, default=24, help="timed steps per side and N")
    p.add_argument("--rounds", type=int, default=12, help="alternate batched / one-by-one this many times")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    kind = f"full-size-{args.full_size}" if args.full_size else args.model
    print(f"# {kind} on {device_name} ({device}, {dtype}), {args.size}x{args.size}, {args.steps} step(s)", flush=True)
    engine = build_engine(args, device, dtype)
    results = {}
    for n in args.sessions:
        results[str(n)] = measure(engine, n, args, device)
        r = results[str(n)]
        print(
            f"N={n}: batched {r['batched']['total_fps']:.1f} fps total ({r['batched']['step_ms_p50']:.1f} ms/step), "
            f"one by one {r['one_by_one']['total_fps']:.1f} fps ({r['one_by_one']['step_ms_p50']:.1f} ms/round), "
            f"x{r['speedup']:.2f}, max|d| {r['max_abs_diff']}, mean|d| {r['mean_abs_diff']:.3f}",
            flush=True,
        )
    report = {
        "bench": "batch",
        "model": kind,
        "device": device_name,
        "device_type": device.type,
        "dtype": str(dtype).replace("torch.", ""),
        "acceleration": args.acceleration,
        "size": args.size,
        "steps": args.steps,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "results": results,
    }
    print("\n| N | batched total fps | step ms | one-by-one total fps | round ms | speed-up | max/mean abs diff |")
    print("|---|---|---|---|---|---|---|")
    for n, r in results.items():
        print(
            f"| {n} | {r['batched']['total_fps']:.1f} | {r['batched']['step_ms_p50']:.1f} | "
            f"{r['one_by_one']['total_fps']:.1f} | {r['one_by_one']['step_ms_p50']:.1f} | "
            f"{r['speedup']:.2f}x | {r['max_abs_diff']} / {r['mean_abs_diff']:.3f} |"
        )
    out = args.json or Path(__file__).parent / "results" / (
        f"batch-{kind}-{device.type}-{report['dtype']}-{args.acceleration}-{args.size}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
