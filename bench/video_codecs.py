"""Benchmark: server-side encode cost of the returned video, VP8 vs H.264 (aiortc's encoders), at 512x512.

The server encodes every output frame once per viewer; this is that cost. Both encoders get the
same frames (a moving, textured picture like a diffusion output, not a flat test card), alternating
in rounds so load from other processes hits both alike. Keyframes (what a PLI/FIR, a new viewer or
a resume costs) are measured separately. Bitrate is each encoder's default target.

    python bench/video_codecs.py [--size 512] [--frames 150] [--rounds 3]

Prints a table and writes JSON to bench/results/video_codecs.json (or --json).
"""

from __future__ import annotations

import argparse
import fractions
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from av import VideoFrame


def frames(size: int, count: int) -> list[VideoFrame]:
    """A textured picture that moves and changes colour: motion and detail as a real output has."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (size * 2, size * 2, 3), dtype=np.uint8)
    texture = ((texture.astype(np.uint16) + np.roll(texture, 1, 0) + np.roll(texture, 1, 1)) // 3).astype(np.uint8)
    out = []
    for i in range(count):
        dx, dy = (i * 3) % size, (i * 2) % size
        img = texture[dy : dy + size, dx : dx + size].copy()
        img[: size // 2, :, 0] = (img[: size // 2, :, 0].astype(int) + i * 4) % 256
        frame = VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        out.append(frame)
    return out


def run(encoder, clip: list[VideoFrame], keyframe_every: int = 0) -> tuple[list[float], int, list[float]]:
    times, keys, size = [], [], 0
    for i, frame in enumerate(clip):
        force = bool(keyframe_every) and i > 0 and i % keyframe_every == 0
        start = time.perf_counter()
        packets, _ = encoder.encode(frame, force_keyframe=force)
        ms = (time.perf_counter() - start) * 1000.0
        size += sum(len(p) for p in packets)
        (keys if force else times).append(ms)
    return times, size, keys


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "video_codecs.json")
    args = parser.parse_args()
    clip = frames(args.size, args.frames)
    results: dict[str, dict[str, list[float] | int]] = {
        name: {"ms": [], "key_ms": [], "bytes": 0} for name in ("vp8", "h264")
    }
    for _ in range(args.rounds):
        for name, factory in (("vp8", Vp8Encoder), ("h264", H264Encoder)):
            times, size, keys = run(factory(), clip, keyframe_every=30)
            results[name]["ms"] += times[5:]  # the first frames warm the encoder up
            results[name]["key_ms"] += keys
            results[name]["bytes"] += size
    table = {}
    for name, r in results.items():
        table[name] = {
            "p50_ms": pct(r["ms"], 50),
            "p95_ms": pct(r["ms"], 95),
            "keyframe_p50_ms": pct(r["key_ms"], 50),
            "kbit_per_frame": r["bytes"] * 8 / 1000 / (args.frames * args.rounds),
        }
    base = table["vp8"]["p50_ms"]
    print(f"encode {args.size}x{args.size}, {args.frames} frames x {args.rounds} rounds (aiortc encoders)")
    print(f"{'codec':6} {'p50 ms':>8} {'p95 ms':>8} {'key p50':>8} {'kbit/frame':>11} {'p50 vs VP8':>11}")
    for name, row in table.items():
        print(
            f"{name:6} {row['p50_ms']:8.2f} {row['p95_ms']:8.2f} {row['keyframe_p50_ms']:8.2f} "
            f"{row['kbit_per_frame']:11.1f} {row['p50_ms'] / base:10.2f}x"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"size": args.size, "frames": args.frames, "rounds": args.rounds, "machine": platform.machine()}
    args.json.write_text(json.dumps({"meta": meta, "results": table}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
