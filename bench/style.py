"""Style engine speed: fps at 256² and 512² (26-style and image-prompt networks); 4 calls batched vs one by one.

Prints a table and writes bench/results/style.json. Each frame goes through the real
`StyleSession.process` (uint8 in → uint8 out, strength 1) on the astronaut photo, panning by a
pixel a frame. Configurations run in interleaved rounds so that load from other processes on a
shared machine hits them alike. "4 calls" serves four sessions' frames of the same shape either
with `Engine.process_batch` (what the device runner calls) or with four `process` calls; the
multi-style graph fixes its batch at 1, so `process_batch` is the same loop and the ratio shows
that (≈ 1.0), not a gain. `--device cuda` uses ONNX Runtime's CUDA provider when the installed
onnxruntime has it (onnxruntime-gpu); the JSON records the provider that actually ran.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from speakdraw.engines import EngineOptions  # noqa: E402
from speakdraw.engines.style.engine import StyleEngine, load_style_engine  # noqa: E402
from speakdraw.settings import Settings  # noqa: E402

CALLS = 4


def frames_for(side: int, count: int) -> list[np.ndarray]:
    from skimage import data

    big = np.asarray(Image.fromarray(data.astronaut()).resize((side + 16, side), Image.BILINEAR))
    return [np.ascontiguousarray(big[:, i % 16 : i % 16 + side]) for i in range(count)]


def settings(side: int, style: int) -> Settings:
    return Settings(width=side, height=side, strength=1.0, style=style, prompt_fade_frames=0)


def time_single(engine: StyleEngine, side: int, frames: list[np.ndarray], image_prompt) -> list[float]:
    session = engine.new_session(settings(side, 14))
    if image_prompt is not None:
        session.set_image_prompt(image_prompt)
    session.process(frames[0])  # warm-up (and the prompt style's vector, cached once)
    out = []
    for frame in frames:
        t = time.perf_counter()
        session.process(frame)
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def time_calls(engine: StyleEngine, side: int, frames: list[np.ndarray], batched: bool) -> list[float]:
    """ms per step of CALLS sessions (different styles), one frame each."""
    sessions = [engine.new_session(settings(side, style)) for style in (14, 3, 20, 7)[:CALLS]]
    for session in sessions:
        session.process(frames[0])
    out = []
    for i in range(0, len(frames) - CALLS + 1, CALLS):
        items = list(zip(sessions, frames[i : i + CALLS], strict=True))
        t = time.perf_counter()
        if batched:
            engine.process_batch(items)
        else:
            for session, frame in items:
                session.process(frame)
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12, help="timed frames per configuration per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--sides", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "style.json")
    args = parser.parse_args()

    from skimage import data

    engine = load_style_engine(EngineOptions(engine="style", device=args.device, extra={"style_threads": args.threads}))
    provider = engine.models.sessions["multistyle"].get_providers()[0]
    image_prompt = engine.encode_image_prompt(np.asarray(data.chelsea()))
    load_before = os.getloadavg()
    frames = {side: frames_for(side, args.frames) for side in args.sides}
    calls_frames = frames_for(256, args.frames)
    samples: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for side in args.sides:
            samples.setdefault(f"26-style {side}x{side}", []).extend(time_single(engine, side, frames[side], None))
            samples.setdefault(f"image prompt {side}x{side}", []).extend(
                time_single(engine, side, frames[side], image_prompt)
            )
        for batched in (False, True):
            key = f"{CALLS} calls 256x256 " + ("process_batch" if batched else "one by one")
            samples.setdefault(key, []).extend(time_calls(engine, 256, calls_frames, batched))

    rows = []
    for key, ms in samples.items():
        p50 = float(np.median(ms))
        per_frame = p50 / CALLS if key.startswith(f"{CALLS} calls") else p50
        rows.append({"config": key, "p50_ms": round(p50, 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
                     "fps": round(1000.0 / per_frame, 2), "n": len(ms)})  # fmt: skip
    base = next(r for r in rows if r["config"].endswith("one by one"))
    batch = next(r for r in rows if r["config"].endswith("process_batch"))
    ratio = round(batch["p50_ms"] / base["p50_ms"], 3)

    print(f"style engine on {provider}, {args.threads} intra-op threads, load {load_before[0]:.2f}")
    print(f"{'config':<34} {'p50 ms':>8} {'p90 ms':>8} {'fps':>7}")
    for r in rows:
        print(f"{r['config']:<34} {r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} {r['fps']:>7.1f}")
    print(f"process_batch / one by one (p50, {CALLS} calls, same run): {ratio}")
    result = {
        "provider": provider,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "rows": rows,
        "batch_over_one_by_one": ratio,
        "note": "fps for 'N calls' rows is frames/s over all calls; the graph's batch is fixed at 1",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
