"""RVM matte cost per frame at 512×512 and 1280×720, as frames/s and as a share of the 30 fps budget.

Prints a table and writes bench/results/matting.json. The baseline, measured in the
same run, is RVM with the README's advised `downsample_ratio` for each size (512² → 1,
720p portrait → 0.375); the other rows are the internal sizes SpeakDraw can pick
(192 px long side is the CPU default, 512 the GPU default), each both with RVM's
full-resolution refiner ("refine") and with the frame shrunk first and the matte
upscaled ("shrink", the CPU default). Configurations run in
interleaved rounds so that load from other processes on a shared machine hits them
alike. Each frame goes through the real `RVMSession.alpha` (uint8 in → float matte
out, recurrent state carried) on a slowly panning real photo; the compositing cost
(feather + composite) is measured alongside.
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

from speakdraw.compositing import composite, feather  # noqa: E402
from speakdraw.matting import MattingOptions, RVMMatting, downsample_ratio  # noqa: E402
from speakdraw.weights import fetch  # noqa: E402

BUDGET_MS = 1000.0 / 30.0
SIZES = {"512x512": (512, 512), "1280x720": (720, 1280)}
README_RATIO = {"512x512": 1.0, "1280x720": 0.375}  # RVM README table, portrait column


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def frames_for(height: int, width: int, count: int) -> list[np.ndarray]:
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    scale = max(width / 512, height / 512)
    big = np.asarray(photo.resize((round(512 * scale) + 16, round(512 * scale)), Image.BILINEAR))
    y0 = (big.shape[0] - height) // 2
    return [np.ascontiguousarray(big[y0 : y0 + height, i % 16 : i % 16 + width]) for i in range(count)]


def time_config(model: RVMMatting, frames: list[np.ndarray], warmup: int = 3) -> list[float]:
    session = model.new_session()
    for frame in frames[:warmup]:
        session.alpha(frame)
    out = []
    for frame in frames[warmup:]:
        t = time.perf_counter()
        session.alpha(frame)
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="timed frames per configuration per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[len(os.sched_getaffinity(0))])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--sides", type=int, nargs="+", default=[160, 192, 256, 384])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "matting.json")
    args = parser.parse_args()

    weights = fetch("rvm-mobilenetv3")
    load_before = os.getloadavg()
    configs = []  # (size name, label, model, is the baseline, threads)
    models: dict[tuple[int, int, bool], RVMMatting] = {}

    def model(threads: int, side: int, refine: bool) -> RVMMatting:
        if (threads, side, refine) not in models:
            options = MattingOptions(args.device, threads, side, refine=refine)
            models[(threads, side, refine)] = RVMMatting(weights, options)
        return models[(threads, side, refine)]

    for threads in args.threads:
        for name, (h, w) in SIZES.items():
            readme_side = round(README_RATIO[name] * max(h, w))
            label = f"t={threads} side={readme_side} ratio={README_RATIO[name]:.3f} refine (README)"
            configs.append((name, label, model(threads, readme_side, True), True, threads))
            for side in args.sides:
                if side >= max(h, w):
                    continue
                for refine in (True, False):
                    ratio = downsample_ratio(h, w, side)
                    label = f"t={threads} side={side} ratio={ratio:.3f} " + ("refine" if refine else "shrink")
                    configs.append((name, label, model(threads, side, refine), False, threads))

    samples: dict[tuple[str, str], list[float]] = {(c[0], c[1]): [] for c in configs}
    frames = {name: frames_for(h, w, args.frames + 3) for name, (h, w) in SIZES.items()}
    for _ in range(args.rounds):
        for name, label, model, _base, _threads in configs:
            samples[(name, label)] += time_config(model, frames[name])

    composite_ms = {}
    for name, (h, w) in SIZES.items():
        frame = frames[name][0]
        alpha = np.random.default_rng(0).random((h, w), dtype=np.float32)
        ts = []
        for _ in range(20):
            t = time.perf_counter()
            composite(255 - frame, frame, feather(alpha, 2))
            ts.append((time.perf_counter() - t) * 1000.0)
        composite_ms[name] = float(np.median(ts))

    rows = []
    for name, label, model, _base, threads in configs:
        ts = np.array(samples[(name, label)])
        baseline = np.array(
            next(samples[(n, lab)] for n, lab, _, b, th in configs if n == name and b and th == threads)
        )
        p50 = float(np.median(ts))
        rows.append(
            {
                "size": name,
                "config": label,
                "provider": model.provider,
                "p50_ms": p50,
                "p90_ms": float(np.percentile(ts, 90)),
                "min_ms": float(ts.min()),
                "fps_p50": 1000.0 / p50,
                "budget_share_p50": p50 / BUDGET_MS,
                "speedup_vs_readme_p50": float(np.median(baseline)) / p50,
                "with_composite_budget_share": (p50 + composite_ms[name]) / BUDGET_MS,
            }
        )

    cores = len(os.sched_getaffinity(0))
    print(f"CPU: {_cpu_name()}")
    print(f"RVM MobileNetV3 (onnxruntime, {rows[0]['provider']}), {cores} usable cores, budget {BUDGET_MS:.1f} ms")
    header = f"{'size':<9} {'config':<44} {'p50 ms':>7} {'p90 ms':>7} {'fps':>6} {'budget':>7} {'vs README':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['size']:<9} {r['config']:<44} {r['p50_ms']:7.1f} {r['p90_ms']:7.1f} {r['fps_p50']:6.1f} "
            f"{r['budget_share_p50']:6.0%} {r['speedup_vs_readme_p50']:8.2f}x"
        )
    print("feather(2)+composite p50 ms: " + ", ".join(f"{k} {v:.1f}" for k, v in composite_ms.items()))
    load_after = os.getloadavg()
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (shared machine)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "budget_ms": BUDGET_MS,
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": _cpu_name(),
        "device": args.device,
        "frames_per_config": args.frames * args.rounds,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "composite_p50_ms": composite_ms,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
