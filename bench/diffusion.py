"""Benchmark: our StreamDiffusion engine vs plain diffusers img2img, same modules, same run.

Both sides get the same UNet / VAE (TAESD) / text encoder objects (compiled ones
too, with --acceleration compile), the same frame size, the same number of
denoising steps per frame and uint8 frames in and out. The diffusers side is how
one would write it without StreamDiffusion: `StableDiffusionImg2ImgPipeline(prompt,
image, strength, num_inference_steps)` per frame, with SD-Turbo's own Euler scheduler.
Measurement alternates between the two in rounds, so load from other processes
hits both alike. Also measured: time to the first frame after a prompt change
(no reload) vs a full reload from disk (load + first frame).

    python bench/diffusion.py                      # CPU, tiny model, 512x512
    python bench/diffusion.py --full-size --device cuda --dtype float16 --size 512 --steps 1

--full-size builds the real SD-Turbo architecture (SD 2.1 UNet, OpenCLIP-H text
encoder, TAESD) with random weights: same FLOPs as the real model, no download.
Prints a table and writes JSON to bench/results/ (or --json).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionImg2ImgPipeline
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speakdraw.diffusion import DiffusionEngine, build_components  # noqa: E402
from speakdraw.diffusion.acceleration import apply_acceleration  # noqa: E402
from speakdraw.diffusion.pretrained import load_pretrained  # noqa: E402
from speakdraw.settings import Settings  # noqa: E402

PROMPT = "a watercolor painting of a person in a room"
NEW_PROMPTS = ["an oil painting, thick brush strokes", "a pencil sketch", "neon cyberpunk portrait", "a marble statue"]


def camera_frames(size: int, count: int = 8) -> list[np.ndarray]:
    """A moving gradient with a moving square: frames differ like a camera's do."""
    yy, xx = np.mgrid[0:size, 0:size]
    frames = []
    for i in range(count):
        shift = i * size // (4 * count)
        rgb = np.stack([(xx + shift) % size * 255 // size, yy * 255 // size, (xx + yy) * 127 // (2 * size) + 64], -1)
        rgb[size // 4 + shift : size // 2 + shift, size // 3 : size // 2] = 220
        frames.append(rgb.astype(np.uint8))
    return frames


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def summary(latencies_s: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000.0 for x in latencies_s)
    return {
        "frames": len(ms),
        "fps": len(ms) / (sum(ms) / 1000.0),
        "p50_ms": statistics.median(ms),
        "p95_ms": ms[min(len(ms) - 1, math.ceil(0.95 * len(ms)) - 1)],
        "mean_ms": statistics.fmean(ms),
    }


class UNetCalls:
    """Counts UNet forward calls and batch rows (checks that both sides do the same steps)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.calls = 0
        self.rows = 0
        self._hook = unet.register_forward_pre_hook(self._count)

    def _count(self, module, args) -> None:
        self.calls += 1
        self.rows += int(args[0].shape[0])

    def reset(self) -> None:
        self.calls = self.rows = 0

    def remove(self) -> None:
        self._hook.remove()


def build_baseline(engine: DiffusionEngine, scheduler) -> StableDiffusionImg2ImgPipeline:
    sd_pipe = engine.components.pipeline(
        StableDiffusionImg2ImgPipeline, vae=engine.vae, unet=engine.unet, scheduler=scheduler
    )
    sd_pipe.set_progress_bar_config(disable=True)
    return sd_pipe


def baseline_frame(sd_pipe, rgb: np.ndarray, args, generator: torch.Generator) -> np.ndarray:
    # diffusers img2img runs int(num_inference_steps * strength) steps: pick N so that is exactly --steps.
    n = math.ceil(args.steps / args.strength - 1e-9)
    out = sd_pipe(
        prompt=PROMPT,
        image=Image.fromarray(rgb),
        strength=args.strength,
        num_inference_steps=n,
        guidance_scale=0.0,
        generator=generator,
        output_type="np",
    ).images[0]
    return (out * 255).round().astype(np.uint8)


def time_frames(fn, frames: list[np.ndarray], count: int, device: torch.device) -> list[float]:
    latencies = []
    for i in range(count):
        rgb = frames[i % len(frames)]
        sync(device)
        start = time.perf_counter()
        fn(rgb)
        sync(device)
        latencies.append(time.perf_counter() - start)
    return latencies


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--tiny", action="store_true", help="tiny random model (default on CPU)")
    kind.add_argument("--full-size", action="store_true", help="SD-Turbo architecture, random weights")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="float16 / float32 (default: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--acceleration", default="none", choices=["none", "xformers", "compile", "tensorrt"])
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for --acceleration compile")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--strength", type=float, default=0.5)
    p.add_argument("--frames", type=int, default=30, help="timed frames per side")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3, help="alternate ours/diffusers this many times")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--no-reload", action="store_true", help="skip the full-reload measurement")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    kind_name = "full-size" if args.full_size else "tiny"
    if kind_name == "full-size" and device.type == "cpu":
        print("note: --full-size on CPU takes seconds per frame", file=sys.stderr)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"# {kind_name} on {device_name} ({device}, {dtype}, acceleration={args.acceleration}), "
        f"{args.size}x{args.size}, {args.steps} step(s), strength {args.strength}",
        flush=True,
    )

    start = time.perf_counter()
    components = build_components(kind_name, device=device)
    build_s = time.perf_counter() - start
    scheduler = components.scheduler
    engine = DiffusionEngine(components, name=kind_name, model_id=f"{kind_name} (random)", device=device, dtype=dtype)
    start = time.perf_counter()
    apply_acceleration(engine, args.acceleration, (args.size, args.size), args.compile_mode)
    engine.warmup()  # the compile happens here, on this thread
    accel_s = time.perf_counter() - start
    print(f"built in {build_s:.1f} s, acceleration setup/warm-up {accel_s:.1f} s", flush=True)

    frames = camera_frames(args.size)
    settings = Settings(
        prompt=PROMPT, width=args.size, height=args.size, steps=args.steps, strength=args.strength, prompt_fade_frames=0
    )
    session = engine.new_session(settings)
    baseline = build_baseline(engine, scheduler)
    generator = torch.Generator().manual_seed(settings.seed)
    sides = {
        "ours": lambda rgb: session.process(rgb),
        "diffusers_img2img": lambda rgb: baseline_frame(baseline, rgb, args, generator),
    }
    counter = UNetCalls(engine.unet)
    unet_use = {}
    for name, fn in sides.items():  # warm-up (and, with compile, the baseline's own recompiles)
        time_frames(fn, frames, args.warmup, device)
        counter.reset()
        fn(frames[0])
        sync(device)
        unet_use[name] = {"unet_calls_per_frame": counter.calls, "unet_rows_per_frame": counter.rows}
    counter.remove()
    latencies: dict[str, list[float]] = {name: [] for name in sides}
    per_round = max(1, args.frames // args.rounds)
    for _ in range(args.rounds):
        for name, fn in sides.items():
            latencies[name] += time_frames(fn, frames, per_round, device)
    results = {name: {**summary(lat), **unet_use[name]} for name, lat in latencies.items()}

    # Prompt change: encode the new text, first frame with it (fade 0 = the very next frame).
    prompt_ttff = []
    for text in NEW_PROMPTS:
        new = settings.updated({"prompt": text})
        sync(device)
        start = time.perf_counter()
        session.update(new, {"prompt"})
        session.process(frames[0])
        sync(device)
        prompt_ttff.append(time.perf_counter() - start)
        settings = new
    results["prompt_change_first_frame_ms"] = statistics.median(prompt_ttff) * 1000.0

    if not args.no_reload:
        results["reload_first_frame_ms"] = measure_reload(kind_name, args, device, dtype, settings, frames[0])
        results["reload_vs_prompt_change"] = results["reload_first_frame_ms"] / results["prompt_change_first_frame_ms"]
    results["fps_ratio_ours_vs_diffusers"] = results["ours"]["fps"] / results["diffusers_img2img"]["fps"]

    report = {
        "bench": "diffusion",
        "model": kind_name,
        "device": str(device),
        "device_name": device_name,
        "dtype": str(dtype).replace("torch.", ""),
        "acceleration": args.acceleration,
        "compile_mode": args.compile_mode,
        "size": args.size,
        "steps": args.steps,
        "strength": args.strength,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "build_s": build_s,
        "acceleration_setup_s": accel_s,
        "results": results,
    }
    print_table(report)
    out = args.json or Path(__file__).parent / "results" / (
        f"diffusion-{kind_name}-{device.type}-{report['dtype']}-{args.acceleration}-{args.size}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


def measure_reload(kind_name, args, device, dtype, settings, rgb) -> float:
    """Save the modules as a diffusers folder once, then time what a reload costs: load + first frame."""
    folder = Path(tempfile.mkdtemp(prefix="speakdraw-bench-"))
    try:
        # A second build (same seed, same weights): the engine's copies are NHWC, which safetensors refuses.
        components = build_components(kind_name, device=device).to(device, dtype)
        sd_pipe = components.pipeline(StableDiffusionImg2ImgPipeline)
        sd_pipe.save_pretrained(folder / "model")
        components.vae.save_pretrained(folder / "taesd")
        del sd_pipe, components
        sync(device)
        start = time.perf_counter()
        loaded = load_pretrained(str(folder / "model"), use_taesd=True, taesd=str(folder / "taesd"), dtype=dtype)
        fresh = DiffusionEngine(loaded, name="reload", model_id=str(folder), device=device, dtype=dtype)
        apply_acceleration(fresh, args.acceleration, (args.size, args.size), args.compile_mode)
        fresh.warmup()  # the compile happens here, on this thread
        fresh.new_session(settings).process(rgb)
        sync(device)
        elapsed = time.perf_counter() - start
        del fresh, loaded
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return elapsed * 1000.0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def print_table(report: dict) -> None:
    r = report["results"]
    print()
    print(f"{'side':<20} {'frames/s':>9} {'p50 ms':>9} {'p95 ms':>9} {'UNet calls x rows / frame':>26}")
    for name in ("ours", "diffusers_img2img"):
        x = r[name]
        calls = f"{x['unet_calls_per_frame']} x {x['unet_rows_per_frame'] // max(1, x['unet_calls_per_frame'])}"
        print(f"{name:<20} {x['fps']:>9.2f} {x['p50_ms']:>9.2f} {x['p95_ms']:>9.2f} {calls:>26}")
    print(f"ratio ours/diffusers frames/s: {r['fps_ratio_ours_vs_diffusers']:.2f}x")
    print(f"first frame after a prompt change: {r['prompt_change_first_frame_ms']:.1f} ms")
    if "reload_first_frame_ms" in r:
        print(
            f"first frame after a full reload:   {r['reload_first_frame_ms']:.1f} ms "
            f"({r['reload_vs_prompt_change']:.0f}x the prompt change)"
        )


if __name__ == "__main__":
    main()
