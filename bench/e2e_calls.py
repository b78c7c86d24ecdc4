"""N real aiortc callers against a running `speakdraw serve` (same machine): per-call fps and round trip.

    python bench/e2e_calls.py http://127.0.0.1:8080 --calls 1 2 4 8 --seconds 15 --size 512
Used by bench/gpu_e2e.sh; prints a table and writes bench/results/e2e_calls.json (or --json PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.multicall import run_callers  # noqa: E402


async def sweep(base: str, calls: list[int], seconds: float, size: int) -> list[dict]:
    rows = []
    for n in calls:
        run = await run_callers(base, n, seconds, settings={"width": size, "height": size}, warmup_s=5.0)
        row = {"calls": n, **run.summary()}
        rows.append(row)
        print(
            f"N={n}: fps per call min {row['fps_min']:6.2f} total {row['fps_total']:7.2f}  "
            f"rtt p50 {row['rtt_p50_ms']:7.1f} p95 {row['rtt_p95_ms']:7.1f} ms (frames with a readable id)  "
            f"server age p50 {row['server_age_p50_ms']:6.1f} p95 {row['server_age_p95_ms']:6.1f} ms  "
            f"fairness {row['fairness']:.2f}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "e2e_calls.json")
    args = parser.parse_args()
    rows = asyncio.run(sweep(args.base.rstrip("/"), args.calls, args.seconds, args.size))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
