"""Benchmark: per-frame time of a stream with an IP-Adapter image prompt vs the same stream without, same run.

Two sessions of one engine (same shared UNet, same settings and seed) process the same camera frames; the
only difference is the image prompt (4 image tokens joined to the 77 text tokens, one extra attention per
cross-attention layer). Frames alternate between them in rounds, so load from other processes hits both
alike; the table gives medians and the factor with/without. Also timed: encoding one image (CLIP vision
tower + projection, done once per image change, never per frame) and a scale change (no re-encoding).

    python bench/ip_adapter.py                                   # CPU, tiny-sd15, 64/256/512
    python bench/ip_adapter.py --arch sd15-full --device cuda --dtype float16 --sizes 512

--arch sd15-full builds the published SD 1.5 architecture (UNet, CLIP ViT-L text tower, TAESD) and the
ViT-H/14 image encoder + an adapter of ip-adapter_sd15.bin's shapes with random weights: the real FLOPs,
no download. Prints a table and writes JSON to bench/results/ (or --json).
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

from bench.diffusion import camera_frames  # noqa: E402
from speakdraw.diffusion import DiffusionEngine, load_diffusion_engine  # noqa: E402
from speakdraw.diffusion.architectures import OPENCLIP_H_TEXT, SD15_SCHEDULER, SD21_UNET, TAESD  # noqa: E402
from speakdraw.diffusion.families import detect_family  # noqa: E402
from speakdraw.diffusion.ip_adapter import IPAdapter, tiny_adapter_state  # noqa: E402
from speakdraw.engines import EngineOptions  # noqa: E402
from speakdraw.settings import Settings  # noqa: E402

# runwayml/stable-diffusion-v1-5 unet/config.json and text_encoder/config.json (CLIP ViT-L/14)
SD15_UNET = {**SD21_UNET, "attention_head_dim": 8, "cross_attention_dim": 768, "use_linear_projection": False}
CLIP_L_TEXT = {
    **OPENCLIP_H_TEXT,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
}
# h94/IP-Adapter models/image_encoder/config.json (OpenCLIP ViT-H/14 vision tower)
VIT_H_VISION = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 16,
    "num_hidden_layers": 32,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 1024,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
}


def picture() -> np.ndarray:
    blocks = np.random.default_rng(1).integers(0, 256, (33, 41, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((16, 16, 1), np.uint8))[:480, :640]


def sd15_full(device: torch.device, dtype: torch.dtype) -> DiffusionEngine:
    """SD 1.5 + ViT-H encoder + adapter with random weights (the real shapes)."""
    from diffusers import AutoencoderTiny, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from speakdraw.diffusion.architectures import Components
    from speakdraw.diffusion.tokenizer import BOS, EOS, char_clip_tokenizer, char_vocab

    vocab = char_vocab()
    with torch.random.fork_rng(devices=[]), device:
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderTiny(**TAESD)
        text = CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT, bos_token_id=vocab[BOS], eos_token_id=vocab[EOS]))
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_H_VISION))
    components = Components(unet, vae, text, char_clip_tokenizer(), EulerDiscreteScheduler.from_config(SD15_SCHEDULER))
    engine = DiffusionEngine(components, name="sd-turbo", model_id="sd15-full (random)", device=device, dtype=dtype)
    engine.family = detect_family(unet.config)
    state = tiny_adapter_state(engine.unet, VIT_H_VISION["projection_dim"])
    engine.ip_adapter = IPAdapter(engine.unet, state, encoder, source="random, ip-adapter_sd15 shapes")
    engine.ip_reason = None
    return engine


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_size(engine: DiffusionEngine, size: int, frames: int, warmup: int, steps: int) -> dict:
    s = Settings(width=size, height=size, steps=steps, prompt_fade_frames=0, ip_adapter_scale=0.6)
    plain, imaged = engine.new_session(s), engine.new_session(s)
    device = engine.torch_device
    encode_ms = []
    for _ in range(5):
        sync(device)
        t = time.perf_counter()
        prompt = engine.encode_image_prompt(picture())
        sync(device)
        encode_ms.append((time.perf_counter() - t) * 1000)
    imaged.set_image_prompt(prompt)
    cams = camera_frames(size)
    for i in range(warmup):
        plain.process(cams[i % len(cams)])
        imaged.process(cams[i % len(cams)])
    times: dict[str, list[float]] = {"without": [], "with": []}
    for i in range(frames):
        cam = cams[i % len(cams)]
        order = (("without", plain), ("with", imaged)) if i % 2 == 0 else (("with", imaged), ("without", plain))
        for name, session in order:
            sync(device)
            t = time.perf_counter()
            session.process(cam)
            sync(device)
            times[name].append((time.perf_counter() - t) * 1000)
    encodes = engine.ip_adapter.encodes
    new = s.updated({"ip_adapter_scale": 1.2})
    sync(device)
    t = time.perf_counter()
    imaged.update(new, new.changed_fields(s))
    imaged.process(cams[0])
    sync(device)
    scale_change_ms = (time.perf_counter() - t) * 1000
    assert engine.ip_adapter.encodes == encodes, "a scale change must not re-encode the image"
    without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
    return {
        "size": size,
        "steps": steps,
        "frames": frames,
        "without_ms": round(without, 2),
        "with_ms": round(with_, 2),
        "factor": round(with_ / without, 3),
        "without_p90_ms": round(float(np.percentile(times["without"], 90)), 2),
        "with_p90_ms": round(float(np.percentile(times["with"], 90)), 2),
        "encode_image_ms": round(statistics.median(encode_ms), 2),
        "scale_change_frame_ms": round(scale_change_ms, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["tiny-sd15", "sd15-full"], default="tiny-sd15")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float16 / float32 (default: fp16 on CUDA)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    if args.arch == "tiny-sd15":
        engine = load_diffusion_engine(EngineOptions(engine="tiny", model="tiny-sd15", device=args.device))
    else:
        engine = sd15_full(device, dtype)
    rows = [bench_size(engine, size, args.frames, args.warmup, args.steps) for size in args.sizes]
    header = (
        f"{'size':>5} {'steps':>5} {'without ms':>11} {'with ms':>9} {'factor':>7} {'encode ms':>10} {'scale Δ ms':>11}"
    )
    print(f"IP-Adapter per-frame cost, {args.arch} on {device} ({dtype}), {torch.get_num_threads()} threads")
    print(header)
    for r in rows:
        print(
            f"{r['size']:>5} {r['steps']:>5} {r['without_ms']:>11.2f} {r['with_ms']:>9.2f} {r['factor']:>7.3f} "
            f"{r['encode_image_ms']:>10.2f} {r['scale_change_frame_ms']:>11.2f}"
        )
    result = {
        "bench": "ip_adapter",
        "arch": args.arch,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "rows": rows,
    }
    out = args.json or Path(__file__).resolve().parent / "results" / f"ip_adapter-{args.arch}-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
