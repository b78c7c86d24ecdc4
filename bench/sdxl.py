"""Benchmark: SDXL-Turbo through our engine vs diffusers' SDXL img2img on the same modules, same run;
and our engine with an image prompt (SDXL IP-Adapter) vs without.

The full-size model is the published SDXL-Turbo architecture (SDXL UNet, CLIP ViT-L + OpenCLIP bigG
text encoders, TAESDXL) with random weights: the same FLOPs as the real model, no download. The image
prompt uses a random OpenCLIP ViT-H/14 vision tower and an adapter with the shapes of
`ip-adapter_sdxl_vit-h`. The diffusers side is `StableDiffusionXLImg2ImgPipeline(prompt, image, strength,
num_inference_steps)` per frame with SDXL-Turbo's trailing Euler schedule, picked so it runs exactly
`--steps` UNet steps. Sides alternate per frame, so load from other processes hits all alike.

    python bench/sdxl.py --tiny --size 128                 # CPU smoke run (tiny-sdxl)
    python bench/sdxl.py --full-size --device cuda --size 512 --steps 1    # GPU: a few minutes

Prints a table and writes JSON to bench/results/ (or --json).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.diffusion import UNetCalls, camera_frames, summary, sync  # noqa: E402
from bench.ip_adapter import VIT_H_VISION, picture  # noqa: E402
from speakdraw.diffusion import DiffusionEngine, build_components  # noqa: E402
from speakdraw.diffusion.acceleration import apply_acceleration  # noqa: E402
from speakdraw.diffusion.architectures import SDXL_TURBO_SCHEDULER  # noqa: E402
from speakdraw.diffusion.families import detect_family  # noqa: E402
from speakdraw.diffusion.ip_adapter import IPAdapter, tiny_adapter_state, tiny_image_encoder  # noqa: E402
from speakdraw.settings import Settings  # noqa: E402

PROMPT = "a watercolor painting of a person in a room"


def build(args, device: torch.device, dtype: torch.dtype) -> DiffusionEngine:
    """SDXL(-Turbo) modules + a random image encoder and adapter with the real shapes (or the tiny ones)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    kind = "full-size-sdxl" if args.full_size else "tiny-sdxl"
    components = build_components(kind, device=device)
    engine = DiffusionEngine(components, name="sdxl-turbo", model_id=f"{kind} (random)", device=device, dtype=dtype)
    engine.family = detect_family(components.unet.config)
    if args.full_size:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
            torch.manual_seed(1)
            encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_H_VISION))
    else:
        encoder = tiny_image_encoder()
    state = tiny_adapter_state(engine.unet, encoder.config.projection_dim)
    engine.ip_adapter = IPAdapter(engine.unet, state, encoder, source="random, ip-adapter_sdxl_vit-h shapes")
    engine.ip_reason = None
    apply_acceleration(engine, args.acceleration, (args.size, args.size), args.compile_mode)
    engine.warmup()  # the compile happens here, on this thread
    return engine


def baseline(engine: DiffusionEngine) -> StableDiffusionXLImg2ImgPipeline:
    c = engine.components
    sd_pipe = StableDiffusionXLImg2ImgPipeline(
        vae=engine.vae,
        text_encoder=c.text_encoder,
        text_encoder_2=c.text_encoder_2,
        tokenizer=c.tokenizer,
        tokenizer_2=c.tokenizer_2,
        unet=engine.unet,
        scheduler=EulerDiscreteScheduler.from_config(SDXL_TURBO_SCHEDULER),
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    sd_pipe.set_progress_bar_config(disable=True)
    return sd_pipe


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--tiny", action="store_true", help="tiny-sdxl (default on CPU)")
    kind.add_argument("--full-size", action="store_true", help="SDXL-Turbo architecture, random weights")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="float16 / float32 (default: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--acceleration", default="none", choices=["none", "compile"])
    p.add_argument("--compile-mode", default=None)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--strength", type=float, default=0.5)
    p.add_argument("--frames", type=int, default=30, help="timed frames per side")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    kind_name = "full-size-sdxl" if args.full_size else "tiny-sdxl"
    print(f"# {kind_name} on {device_name} ({device}, {dtype}), {args.size}x{args.size}, {args.steps} step(s)")
    start = time.perf_counter()
    engine = build(args, device, dtype)
    build_s = time.perf_counter() - start
    print(f"built in {build_s:.1f} s", flush=True)

    s = Settings(
        prompt=PROMPT, width=args.size, height=args.size, steps=args.steps, strength=args.strength, prompt_fade_frames=0
    )
    plain, imaged = engine.new_session(s), engine.new_session(s)
    imaged.set_image_prompt(engine.encode_image_prompt(picture()))
    sd_pipe = baseline(engine)
    n = math.ceil(args.steps / args.strength - 1e-9)  # diffusers runs int(n * strength) steps
    generator = torch.Generator().manual_seed(s.seed)

    def diffusers_frame(rgb: np.ndarray) -> np.ndarray:
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

    sides = {"ours": plain.process, "ours_image_prompt": imaged.process, "diffusers_sdxl_img2img": diffusers_frame}
    frames = camera_frames(args.size)
    counter = UNetCalls(engine.unet)
    unet_use = {}
    for name, fn in sides.items():
        for i in range(args.warmup):
            fn(frames[i % len(frames)])
        counter.reset()
        fn(frames[0])
        sync(device)
        unet_use[name] = {"unet_calls_per_frame": counter.calls, "unet_rows_per_frame": counter.rows}
    counter.remove()
    latencies: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(args.frames):
        for name, fn in sides.items():
            rgb = frames[i % len(frames)]
            sync(device)
            t = time.perf_counter()
            fn(rgb)
            sync(device)
            latencies[name].append(time.perf_counter() - t)
    results = {name: {**summary(lat), **unet_use[name]} for name, lat in latencies.items()}
    results["fps_ratio_ours_vs_diffusers"] = results["ours"]["fps"] / results["diffusers_sdxl_img2img"]["fps"]
    results["fps_ratio_image_prompt_vs_without"] = results["ours_image_prompt"]["fps"] / results["ours"]["fps"]
    report = {
        "bench": "sdxl",
        "model": kind_name,
        "device": device_name,
        "device_type": device.type,
        "dtype": str(dtype).replace("torch.", ""),
        "acceleration": args.acceleration,
        "size": args.size,
        "steps": args.steps,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "build_s": build_s,
        "results": results,
    }
    print("\n| side | fps | p50 ms | p95 ms | UNet calls/rows per frame |")
    print("|---|---|---|---|---|")
    for name in sides:
        r = results[name]
        print(
            f"| {name} | {r['fps']:.2f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
            f"{r['unet_calls_per_frame']}/{r['unet_rows_per_frame']} |"
        )
    print(
        f"ours / diffusers: x{results['fps_ratio_ours_vs_diffusers']:.2f}; "
        f"with image prompt / without: x{results['fps_ratio_image_prompt_vs_without']:.2f}"
    )
    out = args.json or Path(__file__).parent / "results" / (
        f"sdxl-{kind_name}-{device.type}-{report['dtype']}-{args.acceleration}-{args.size}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
