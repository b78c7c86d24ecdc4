"""What the front door of `speakdraw cluster` costs: a local cluster of 2 passthrough workers, measured here.

    python bench/cluster.py [--offers 20] [--seconds 15]
- start-up: `speakdraw cluster` → both workers alive;
- signaling: offer → answer through the front door vs straight to a worker (alternated, same run);
- the front door's CPU and memory while 4 aiortc callers run (media never passes it) and while it relays one
  MJPEG viewer; and the memory of Ray's own processes (everything of the cluster but the two servers).
Prints a table and writes bench/results/cluster.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.clusterproc import ClusterProcess, session_pids  # noqa: E402
from tests.mjpeg_client import read_parts  # noqa: E402
from tests.multicall import run_callers  # noqa: E402
from tests.rtc_client import RtcClient  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def answer_ms(base: str) -> float:
    client = RtcClient(base)
    try:
        client.pc.addTrack(client.video)
        await client.pc.setLocalDescription(await client.pc.createOffer())
        body = {"sdp": client.pc.localDescription.sdp, "type": "offer"}
        async with aiohttp.ClientSession() as http:
            start = time.perf_counter()
            async with http.post(base + "/api/offer", json=body) as resp:
                answer = await resp.json()
                elapsed = (time.perf_counter() - start) * 1000.0
            async with http.delete(f"{base}/api/sessions/{answer['session_id']}"):
                pass
        return elapsed
    finally:
        await client.pc.close()


async def measure(cluster: ClusterProcess, offers: int, seconds: float) -> dict:
    health = cluster.health()
    front = health["pid"]
    workers = {w["pid"] for w in health["workers"]}
    direct = health["workers"][0]["url"]
    through, straight = [], []
    for _ in range(offers):
        through.append(await answer_ms(cluster.base))
        straight.append(await answer_ms(direct))
    row: dict = {
        "offer_answer_p50_ms": {"front_door": statistics.median(through), "straight": statistics.median(straight)}
    }
    row["offer_answer_added_p50_ms"] = row["offer_answer_p50_ms"]["front_door"] - row["offer_answer_p50_ms"]["straight"]

    c0, t0 = cpu_s(front), time.monotonic()
    run = await run_callers(cluster.base, callers=4, seconds=seconds, fps=15.0, settings={"width": 256, "height": 256})
    row["calls_4"] = {
        "front_door_cpu_pct": 100 * (cpu_s(front) - c0) / (time.monotonic() - t0),
        "fps_total": run.summary()["fps_total"],
    }

    client = RtcClient(cluster.base, fps=15, settings={"width": 256, "height": 256})
    await client.connect()
    try:
        await client.wait_frames(5)
        async with aiohttp.ClientSession() as http:
            c0, t0 = cpu_s(front), time.monotonic()
            async with http.get(f"{cluster.base}/api/sessions/{client.session_id}/stream.mjpg") as resp:
                parts = [p async for p in read_parts(resp, seconds=seconds / 2)]
            elapsed = time.monotonic() - t0
        row["mjpeg_1_viewer"] = {
            "front_door_cpu_pct": 100 * (cpu_s(front) - c0) / elapsed,
            "parts_per_s": len(parts) / elapsed,
            "kbytes_per_s": sum(len(p.jpeg) for p in parts) / elapsed / 1024,
        }
    finally:
        await client.close()
    others = [p for p in session_pids(cluster.sid) if p not in workers and p != front]
    row["rss_mb"] = {
        "front_door": rss_mb(front),
        "ray_processes": sum(rss_mb(p) for p in others),
        "workers": [rss_mb(p) for p in workers],
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "cluster.json")
    args = parser.parse_args()
    started = time.monotonic()
    cluster = ClusterProcess("--cpu-cores", "1", "--log-level", "warning")
    try:
        cluster.wait_ready()
        row = {"startup_s": time.monotonic() - started, "load_before": os.getloadavg()}
        row.update(asyncio.run(measure(cluster, args.offers, args.seconds)))
        row["load_after"] = os.getloadavg()
    finally:
        left = cluster.stop()
    row["left_after_stop"] = left
    p50 = row["offer_answer_p50_ms"]
    print(f"start-up to 2 workers alive      {row['startup_s']:6.1f} s")
    print(f"offer->answer p50                front door {p50['front_door']:.1f} ms, straight {p50['straight']:.1f} ms"
          f" (+{row['offer_answer_added_p50_ms']:.1f} ms)")  # fmt: skip
    print(f"front door CPU, 4 calls          {row['calls_4']['front_door_cpu_pct']:5.1f} % of a core "
          f"({row['calls_4']['fps_total']:.0f} fps through the workers)")  # fmt: skip
    m = row["mjpeg_1_viewer"]
    print(f"front door CPU, 1 MJPEG relayed  {m['front_door_cpu_pct']:5.1f} % ({m['parts_per_s']:.1f} parts/s, "
          f"{m['kbytes_per_s']:.0f} KB/s)")  # fmt: skip
    r = row["rss_mb"]
    print(f"memory (RSS)                     front door {r['front_door']:.0f} MB, Ray's processes "
          f"{r['ray_processes']:.0f} MB, workers {', '.join(f'{w:.0f}' for w in r['workers'])} MB")  # fmt: skip
    print(f"load average before/after        {row['load_before']} / {row['load_after']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
