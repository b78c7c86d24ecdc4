"""Several calls on one engine: do interleaved sessions give exactly what each gives alone?

The check behind making `--compile-mode reduce-overhead` (CUDA graphs) more than opt-in:
CUDA-graph replays reuse output memory, so a session that kept a tensor from its last frame
would see another session's data. Each session runs its frames alone, then all sessions run
round-robin (as the video worker serves calls); outputs must match, and the table gives the
per-frame time of both orders.

    python bench/gpu_sessions.py --device cuda --acceleration compile --compile-mode reduce-overhead
    python bench/gpu_sessions.py --tiny --device cpu            # the same logic, here
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.diffusion import camera_frames  # noqa: E402
from speakdraw.diffusion import DiffusionEngine, build_components  # noqa: E402
from speakdraw.diffusion.acceleration import apply_acceleration  # noqa: E402
from speakdraw.settings import Settings  # noqa: E402

PROMPTS = ["a watercolor dragon", "an oil painting of a fox", "a neon city at night"]


def run(sessions, frames, order: str, device: torch.device) -> tuple[list[list[np.ndarray]], list[float]]:
    outputs: list[list[np.ndarray]] = [[] for _ in sessions]
    times: list[float] = []

    def step(i: int, frame: np.ndarray) -> None:
        start = time.perf_counter()
        out = sessions[i].process(frame)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
        outputs[i].append(out.copy())

    if order == "alone":
        for i in range(len(sessions)):
            for frame in frames:
                step(i, frame)
    else:
        for frame in frames:
            for i in range(len(sessions)):
                step(i, frame)
    return outputs, times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--acceleration", default="none")
    p.add_argument("--compile-mode", default=None)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--sessions", type=int, default=3)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    kind = "tiny" if args.tiny else "full-size"
    engine = DiffusionEngine(
        build_components(kind, device=device), name=kind, model_id=kind, device=device, dtype=dtype
    )
    apply_acceleration(engine, args.acceleration, (args.size, args.size), args.compile_mode)
    engine.warmup()  # the compile happens here, on this thread
    frames = camera_frames(args.size, args.frames)

    def fresh():
        return [
            engine.new_session(
                Settings(prompt=PROMPTS[i % 3], seed=10 + i, width=args.size, height=args.size, prompt_fade_frames=0)
            )
            for i in range(args.sessions)
        ]

    run(fresh(), frames[:2], "alone", device)  # warm-up (graph capture / recompiles)
    alone, t_alone = run(fresh(), frames, "alone", device)
    mixed, t_mixed = run(fresh(), frames, "interleaved", device)
    diff = max(
        int(np.abs(a.astype(int) - b.astype(int)).max())
        for sa, sb in zip(alone, mixed, strict=True)
        for a, b in zip(sa, sb, strict=True)
    )
    distinct = int(np.abs(alone[0][-1].astype(int) - alone[1][-1].astype(int)).max())
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "kind": kind,
        "acceleration": args.acceleration,
        "compile_mode": args.compile_mode,
        "sessions": args.sessions,
        "frames": args.frames,
        "max_abs_diff_interleaved_vs_alone": diff,
        "sessions_differ_from_each_other": distinct,
        "alone_p50_ms": float(np.median(t_alone)),
        "interleaved_p50_ms": float(np.median(t_mixed)),
    }
    print(f"{'order':12} {'p50 ms':>8}")
    print(f"{'alone':12} {result['alone_p50_ms']:8.2f}")
    print(f"{'interleaved':12} {result['interleaved_p50_ms']:8.2f}")
    print(f"max |interleaved - alone| = {diff} (0 = sessions isolated); sessions differ by up to {distinct}")
    out = args.json or Path(__file__).resolve().parent / "results" / "gpu_sessions.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
