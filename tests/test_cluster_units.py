"""`speakdraw cluster` without Ray: flags passed to the workers, the fleet's room and reservations, merged
metrics, the hint without the extra, and the worker side of one `speakdraw serve --worker-id` (session ids
that name the worker, drain by signal, SIGTERM that waits for the calls)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time

import aiohttp
import pytest

from server.cli import add_serve_args, build_parser
from server.cluster.cli import worker_argv
from server.cluster.fleet import Fleet, WorkerView
from server.cluster.fleet_metrics import merge, relabel
from tests.rtc_client import RtcClient
from tests.serverproc import REPO


def cluster_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["cluster", *argv])


def test_every_media_flag_goes_to_the_workers_and_the_listener_flags_stay():
    args = cluster_args(
        "--workers", "3", "--host", "0.0.0.0", "--port", "9000", "--https-port", "0", "--token", "secret",
        "--engine", "tiny", "--model", "tiny-sd15", "--no-taesd", "--lcm-lora", "--ice-server", "stun:a:3478",
        "--ice-server", "turn:u:p@b:3478", "--turn-url", "turn:t:3478", "--turn-secret", "s", "--min-fps", "4",
        "--media-ports", "50000-50100", "--simulate-model-ms", "40", "--cpu-cores", "1", "--drain-timeout", "30",
    )  # fmt: skip
    argv = worker_argv(args, add_serve_args)
    assert argv == [
        "--engine=tiny", "--model=tiny-sd15", "--no-taesd", "--lcm-lora=latent-consistency/lcm-lora-sdv1-5",
        "--ice-server=stun:a:3478", "--ice-server=turn:u:p@b:3478", "--min-fps=4.0", "--cpu-cores=1",
        "--simulate-model-ms=40.0", "--turn-url=turn:t:3478", "--turn-secret=s", "--media-ports=50000-50100",
        "--drain-timeout=30.0",
    ]  # fmt: skip
    # and what the workers get parses back to the same media settings
    back = build_parser().parse_args(["serve", *argv])
    for dest in ("engine", "model", "no_taesd", "lcm_lora", "ice_server", "min_fps", "media_ports", "turn_secret"):
        assert getattr(back, dest) == getattr(args, dest), dest
    assert back.port == 8080 and back.token is None  # the front door's listener flags stayed with it


def test_a_flag_serve_gains_passes_through_with_no_change_to_the_cluster():
    def serve_args_plus(parser: argparse.ArgumentParser) -> None:
        add_serve_args(parser)
        parser.add_argument("--a-future-flag", default="off")

    args = argparse.Namespace(**vars(cluster_args("--engine", "style")), a_future_flag="on")
    assert worker_argv(args, serve_args_plus) == ["--engine=style", "--a-future-flag=on"]
    # and one serve really gained after the cluster was written
    args = cluster_args("--degradation", "maintain-resolution")
    assert worker_argv(args, add_serve_args) == ["--degradation=maintain-resolution"]


def test_without_the_extra_the_command_says_how_to_install_it():
    code = "import sys; sys.modules['ray'] = None; from server.cli import main; raise SystemExit(main(['cluster']))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert 'pip install -e ".[cluster]"' in done.stderr


def worker(worker_id: str, *, state: str = "alive", room=None, total=None, calls=0, max_sessions=8) -> WorkerView:
    capacity = {"calls": calls, "total_fps": total, "min_fps": 8.0}
    if room is not None:
        capacity["room"] = room
    view = WorkerView(worker_id, info={"url": f"http://{worker_id}", "max_sessions": max_sessions, "min_fps": 8.0})
    view.health = {"sessions": calls, "capacity": capacity, "engine_ready": True}
    view.health_at, view.state, view.ever_alive = time.monotonic(), state, True
    return view


def fleet(*views: WorkerView) -> Fleet:
    f = Fleet(directory=None)  # type: ignore[arg-type]
    f.workers = {v.id: v for v in views}
    return f


def test_room_is_the_workers_own_when_it_reports_one_else_derived_from_its_measured_fps():
    assert worker("a", room=3, total=1000.0).room() == 3
    assert worker("a", total=40.0, calls=2).room() == 3  # 40 fps at 8 fps each: 5 calls, 2 there
    assert worker("a", total=None, calls=2, max_sessions=4).room() == 2  # nothing measured: the session cap
    assert worker("a", total=1000.0, calls=7).room() == 1  # the session cap bounds it too
    idle = worker("a", total=16.0, calls=0)
    idle.health["capacity"]["guard"] = 0.5  # cut while it had calls; no frames since to ease it back
    assert idle.room() == 4  # read without that stale cut: 32 fps at 8 fps each
    busy = worker("a", total=16.0, calls=1)
    busy.health["capacity"]["guard"] = 0.5
    assert busy.room() == 1  # with calls the cut is current: 16 fps, 2 calls at 8


def test_offers_arriving_together_cannot_overfill_a_worker():
    f = fleet(worker("w0", room=3), worker("w1", room=2))
    taken = [f.reserve() for _ in range(8)]
    chosen = [v.id for v in taken if v is not None]
    assert sorted(chosen) == ["w0", "w0", "w0", "w1", "w1"] and taken[5:] == [None, None, None]
    assert chosen[:2] == ["w0", "w1"] or chosen[:2] == ["w0", "w0"]  # most room first
    for view in taken[:5]:
        f.release(view, admitted=True)
    assert f.reserve() is None  # answered, but not yet counted by the worker's /healthz: still taken
    f.workers["w0"].recent.clear()  # a /healthz asked after those answers counts them (room from the worker)
    f.workers["w0"].health["capacity"]["room"] = 1
    assert f.reserve().id == "w0"


def test_draining_dead_stale_and_excluded_workers_get_no_offers_and_a_resume_goes_home_first():
    stale = worker("w3", room=5)
    stale.health_at -= 10
    f = fleet(worker("w0", room=5, state="draining"), worker("w1", room=5, state="dead"), stale, worker("w2", room=1))
    assert f.reserve().id == "w2"
    assert f.reserve() is None
    loading = fleet(worker("w0", room=5, state="starting"), worker("w1", room=0))
    assert loading.reserve().id == "w0"  # no ready worker has room: one still loading its model takes the call
    assert fleet(worker("w0", room=5, state="starting"), worker("w1", room=2)).reserve().id == "w1"  # ready first
    g = fleet(worker("w0", room=5), worker("w1", room=1))
    assert g.reserve(prefer="w1").id == "w1"  # the resume's owner, while it lives, even with less room
    assert g.reserve(exclude={"w0"}) is None  # w1 has no room left for a second offer, w0 is excluded
    assert g.owner("w1-abc").id == "w1" and g.owner("abc") is None and g.owner("w9-abc") is None


def test_fleet_metrics_carry_a_worker_label_and_merge_families():
    text = (
        "# HELP speakdraw_frames_in_total Camera frames received\n# TYPE speakdraw_frames_in_total counter\n"
        "speakdraw_frames_in_total 5.0\n"
        '# HELP lat Latency\n# TYPE lat histogram\nlat_bucket{le="0.1",stage="total"} 1.0\n'
        'lat_bucket{le="+Inf",stage="total"} 2.0\nlat_count{stage="total"} 2.0\nlat_sum{stage="total"} 0.3\n'
    )
    families = merge([relabel(text, "w0"), relabel(text.replace("5.0", "7.0"), "w1")])
    frames = next(f for f in families if f.name == "speakdraw_frames_in")
    assert {(s.labels["worker"], s.value) for s in frames.samples} == {("w0", 5.0), ("w1", 7.0)}
    lat = next(f for f in families if f.name == "lat")
    assert {s.labels["worker"] for s in lat.samples} == {"w0", "w1"} and len(lat.samples) == 8


async def test_a_worker_names_itself_in_its_session_ids_and_drains_by_signal(start_server):
    server = start_server("--worker-id", "w7")
    assert server.health()["worker"] == "w7" and server.health()["pid"] == server.proc.pid
    first = RtcClient(server.base)
    try:
        await first.connect()
        assert first.session_id.startswith("w7-") and len(first.session_id) == 3 + 32
        await first.wait_frames(3)
        server.proc.send_signal(signal.SIGUSR1)  # drain: no new calls, the call goes on
        deadline = time.monotonic() + 10
        while not server.health()["draining"]:
            assert time.monotonic() < deadline, "SIGUSR1 did not drain"
            await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.base}/api/offer", json={"type": "offer", "sdp": "v=0"}) as resp:
                body = await resp.json()
                assert resp.status == 503 and body["error"]["code"] == "draining", body
                assert int(resp.headers["Retry-After"]) >= 1
        await first.wait_frames(10, timeout=20)
        server.proc.send_signal(signal.SIGUSR2)  # takes calls again
        deadline = time.monotonic() + 10
        while server.health()["draining"]:
            assert time.monotonic() < deadline, "SIGUSR2 did not undrain"
            await asyncio.sleep(0.1)
        second = RtcClient(server.base)
        await second.connect()
        await second.close()
    finally:
        await first.close()


async def test_sigterm_on_a_worker_lets_its_call_end_then_exits(start_server):
    server = start_server("--worker-id", "w3", "--drain-timeout", "60")
    client = RtcClient(server.base)
    try:
        await client.connect()
        await client.wait_frames(3)
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(2.0)
        assert server.proc.poll() is None, "a worker with a call must not exit on SIGTERM"
        assert server.health()["draining"] is True
        received = client.frames_received
        await client.wait_frames(5, timeout=20)  # the call goes on while it drains
        assert client.frames_received > received
    finally:
        await client.close()  # hangs up: the worker has no calls left and exits
    deadline = time.monotonic() + 20
    while server.proc.poll() is None:
        assert time.monotonic() < deadline, "the drained worker did not exit"
        await asyncio.sleep(0.2)
    assert server.proc.returncode == 0


@pytest.mark.parametrize("bad", ["w-1", "w 1", "wé"])
def test_a_worker_id_is_url_safe_and_has_no_dash(bad):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--worker-id", bad])


def test_the_kuberay_manifest_asks_for_gpu_workers_and_its_front_door_command_parses():
    import shlex

    import yaml

    docs = {d["kind"]: d for d in yaml.safe_load_all((REPO / "contrib" / "kuberay" / "raycluster.yaml").read_text())}
    cluster = docs["RayCluster"]["spec"]
    assert cluster["enableInTreeAutoscaling"] is True
    (gpu,) = cluster["workerGroupSpecs"]
    assert gpu["rayStartParams"]["num-gpus"] == "1" and gpu["maxReplicas"] > gpu["minReplicas"]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    front = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    words = shlex.split(front["args"][0].replace('"$SPEAKDRAW_TOKEN"', "t").replace('"$TURN_SECRET"', "s"))
    assert words[:3] == ["exec", "speakdraw", "cluster"]
    args = build_parser().parse_args(words[2:])
    assert args.gpus_per_worker == 1 and args.ray_address.endswith(":6379") and args.token == "t"
    assert "--turn-secret=s" in worker_argv(args, add_serve_args)  # every worker relays through the same TURN
