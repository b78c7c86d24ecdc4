"""Churn: N call cycles, 4 at a time, against a real `speakdraw serve`; the server's RSS after every round.

    python bench/churn.py                       # 1,000 cycles, prints the RSS trail, writes bench/results/churn.json
    python bench/churn.py --cycles 200 --profile  # the server under tracemalloc: what grew, by line and by type

A cycle is one aiortc caller (256², 15 fps) that sees two frames and hangs up (every fourth one just goes
away: the ICE/DTLS teardown path). After each round of `--every` cycles the server settles (no session,
no peer connection) and its VmRSS is read, so the points compare like with like. The pass mark of
issue 20 is growth over the last half of the run ≤ 5 MB.

`--profile` runs the server in a child process of this script with `tracemalloc` on and a bench-only
route (`/_bench/memory`, never part of `speakdraw serve`): after the first round it marks a baseline,
and at the end prints the allocation sites and the object types (gc) that grew since. `--native` runs
the same child without tracemalloc and adds glibc's own count (`mallinfo2`) to every point: memory
in use by C code (codecs, DTLS, SRTP) vs memory freed but kept by the allocator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import churn  # noqa: E402
from tests.serverproc import ServerProcess, free_port  # noqa: E402

SERVE_ARGS = ("--min-fps", "1")


def _print_point(trail: churn.Trail, native: str | None = None) -> None:
    done, mb = trail.points[-1]
    first = trail.points[0][1]
    line = f"  {done:5d} cycles  RSS {mb:7.1f} MB  (+{mb - first:5.1f})  failures {len(trail.failures)}"
    if native is not None:
        m = _get(native, "/_bench/malloc")
        trail.native.append((done, round(m["in_use_mb"], 1), round(m["free_mb"], 1), m["pymalloc_arenas"]))
        line += f"  malloc: in use {m['in_use_mb']:6.1f} MB, freed but kept {m['free_mb']:6.1f} MB"
        line += f"; pymalloc arenas {m['pymalloc_arenas']}"
    print(line, flush=True)


# ---- the profiled server (child process) ------------------------------------------------------------------
def serve_profiled(argv: list[str]) -> None:
    """`speakdraw serve argv` with tracemalloc on and GET /_bench/memory[?mark=1] added to its app."""
    import collections
    import ctypes
    import gc
    import tracemalloc

    from aiohttp import web

    import server.app
    from server import cli

    if os.environ.get("SPEAKDRAW_BENCH_TRACEMALLOC") == "1":
        tracemalloc.start(12)
    marks: dict[str, object] = {}

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (n, ctypes.c_size_t)
            for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        ]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def pymalloc_arenas() -> int:
        """Python's own small-object arenas now (sys._debugmallocstats writes to the C stderr)."""
        import re
        import tempfile

        with tempfile.TemporaryFile() as out:
            saved = os.dup(2)
            os.dup2(out.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            out.seek(0)
            found = re.search(
                rb"# arenas highwater mark\s*=\s*[\d,]+\s*# arenas allocated current\s*=\s*([\d,]+)", out.read()
            )
        return int(found.group(1).replace(b",", b"")) if found else -1

    async def malloc(request: web.Request) -> web.Response:
        m = libc.mallinfo2()
        mb = 2**20
        return web.json_response(
            {
                "heap_mb": m.arena / mb,
                "in_use_mb": (m.uordblks + m.hblkhd) / mb,
                "free_mb": m.fordblks / mb,
                "pymalloc_arenas": pymalloc_arenas(),
            }
        )

    def type_counts() -> collections.Counter:
        return collections.Counter(type(o).__qualname__ for o in gc.get_objects())

    async def memory(request: web.Request) -> web.Response:
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            ]
        )
        counts = type_counts()
        if request.query.get("mark") or "snapshot" not in marks:
            marks.update(snapshot=snapshot, counts=counts)
            return web.json_response({"marked": True, "traced_mb": tracemalloc.get_traced_memory()[0] / 2**20})
        lines = []
        for stat in snapshot.compare_to(marks["snapshot"], "traceback")[:15]:
            frames = [f"{f.filename.replace(str(REPO) + '/', '')}:{f.lineno}" for f in stat.traceback[-6:]]
            lines.append({"kb": round(stat.size_diff / 1024, 1), "count": stat.count_diff, "where": frames})
        grown = (counts - marks["counts"]).most_common(25)
        return web.json_response(
            {"traced_mb": tracemalloc.get_traced_memory()[0] / 2**20, "sites": lines, "types": grown}
        )

    async def garbage(request: web.Request) -> web.Response:
        """What only the cyclic collector would free now (objects in reference cycles), by type."""
        gc.set_debug(gc.DEBUG_SAVEALL)
        start = time.perf_counter()
        found = gc.collect()
        ms = (time.perf_counter() - start) * 1000.0
        gc.set_debug(0)
        types = collections.Counter(type(o).__module__ + "." + type(o).__qualname__ for o in gc.garbage)
        gc.garbage.clear()
        return web.json_response(
            {"collected": found, "ms": ms, "tracked": len(gc.get_objects()), "types": types.most_common(40)}
        )

    make = server.app.create_app

    def create_app(*args, **kwargs):
        app = make(*args, **kwargs)
        app.router.add_get("/_bench/memory", memory)
        app.router.add_get("/_bench/malloc", malloc)
        app.router.add_get("/_bench/garbage", garbage)
        return app

    server.app.create_app = create_app
    raise SystemExit(cli.main(["serve", *argv]))


class ProfiledServer(ServerProcess):
    """A ServerProcess whose child is `bench/churn.py --serve-profiled` instead of `python -m server.cli`."""

    def __init__(self, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.https_port = 0
        self.base = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, __file__, "--serve-profiled", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--https-port", "0", "--engine", "passthrough", "--stt", "off", "--matting", "off", *extra]
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"speakdraw-churn-{self.port}.log"
        self._log = open(self.log_path, "wb")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)


def _get(base: str, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(base + path, timeout=120) as resp:
        return json.loads(resp.read())


def _memory(base: str, mark: bool = False) -> dict:
    return _get(base, "/_bench/memory" + ("?mark=1" if mark else ""))


async def main_async(args: argparse.Namespace) -> dict:
    env = dict(item.split("=", 1) for item in args.server_env)
    if args.profile:
        env["SPEAKDRAW_BENCH_TRACEMALLOC"] = "1"
    child = args.profile or args.native
    serve_args = (*SERVE_ARGS, *args.serve_args)
    server = ProfiledServer(*serve_args, env=env) if child else ServerProcess(*serve_args, env=env)
    try:
        server.wait_ready()
        print(f"churn: {args.cycles} cycles, {args.parallel} at a time, RSS after every {args.every}", flush=True)
        if args.profile:
            warm = await churn.run(server.base, server.proc.pid, args.every, args.parallel, args.every)
            _memory(server.base, mark=True)
            print(f"  warm-up round done ({len(warm.failures)} failures); tracemalloc baseline marked", flush=True)
        native = server.base if child else None
        trail = await churn.run(
            server.base, server.proc.pid, args.cycles, args.parallel, args.every, lambda t: _print_point(t, native)
        )
        result = trail.as_dict()
        if native:
            result["malloc_mb"] = trail.native
        if args.profile:
            result["profile"] = _memory(server.base)
    finally:
        server.stop()
    return result


def main() -> None:
    if sys.argv[1:2] == ["--serve-profiled"]:
        serve_profiled(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--profile", action="store_true", help="tracemalloc + gc type counts in the server")
    parser.add_argument("--native", action="store_true", help="glibc malloc in use / kept at every point")
    parser.add_argument(
        "--serve-args", nargs="*", default=[], help="more `speakdraw serve` flags, e.g. --resume-window 0"
    )
    parser.add_argument("--server-env", nargs="*", default=[], metavar="KEY=VALUE", help="extra server environment")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "churn.json")
    args = parser.parse_args()
    started = time.time()
    result = asyncio.run(main_async(args))
    result["load_avg"] = list(os.getloadavg())
    result["started"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
    result["commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    print()
    print("| cycles | RSS MB |")
    print("|---|---|")
    for done, mb in result["rss_mb"]:
        print(f"| {done} | {mb} |")
    print(
        f"\n{result['cycles']} cycles in {result['seconds']:.0f} s, {len(result['failures'])} failed; "
        f"growth {result['growth_mb']} MB; over the last half {result['last_half_growth_mb']} MB end to end, "
        f"{result['last_half_trend_mb']} MB along the fitted line (pass mark ≤ 5 MB); load {result['load_avg'][0]:.1f}"
    )
    if "profile" in result:
        print("\ngrew since the baseline (tracemalloc, by traceback):")
        for site in result["profile"]["sites"]:
            print(f"  {site['kb']:9.1f} KB {site['count']:7d}  {' < '.join(reversed(site['where']))}")
        print("object types that grew (gc):", result["profile"]["types"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
