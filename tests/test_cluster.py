"""`speakdraw cluster` on a real local Ray: 2 passthrough workers (1 CPU each) behind one front door, aiortc
callers and Chromium on loopback (issue 21, "What must be shown").

One cluster serves the whole module (starting Ray and two workers costs ~15-30 s here); the test that kills
a worker runs last. Its teardown stops every Ray process and checks with `ps` that no raylet/gcs_server of
it is left, including when a test failed.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import statistics
import time

import aiohttp
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from PIL import Image

from tests.clusterproc import ClusterProcess, ray_processes
from tests.mjpeg_client import read_parts
from tests.multicall import run_callers
from tests.rtc_client import COUNT_BITS, RtcClient, read_frame_id
from tests.serverproc import ServerProcess

pytest.importorskip("ray")

SMALL = {"width": 256, "height": 256}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("cluster")
    # --min-fps 4: when a killed worker restarts, Ray's new worker process and the new server's start-up take these
    # 2 shared cores for seconds; the survivor's latency guard then cuts its measured capacity, and at the default
    # floor of 8 fps it would refuse the rejoining calls (as it should, on a machine this busy).
    c = ClusterProcess(
        "--cpu-cores", "1", "--min-fps", "4", "--log-level", "warning", log_path=logs / "front-door-1.log"
    )  # fmt: skip
    try:
        c.wait_ready()
        yield c
    finally:
        left = c.stop()
        print(f"cluster log: {c.log_path}; killed after stop: {left}")
        assert not ray_processes(c.temp_dir), ray_processes(c.temp_dir)


def owner(session_id: str) -> str:
    return session_id.partition("-")[0]


async def connect_spread(base: str, count: int, **kwargs) -> list[RtcClient]:
    clients = [RtcClient(base, caller=i, keep_frames=3, **kwargs) for i in range(count)]
    for client in clients:
        await client.connect()
    await asyncio.gather(*(c.wait_frames(3, timeout=30) for c in clients))
    return clients


async def idle(cluster: ClusterProcess, timeout: float = 15.0) -> None:
    """Until every worker is alive with no calls (the calls of the test before have hung up)."""
    deadline = time.monotonic() + timeout
    while True:
        workers = (await asyncio.to_thread(cluster.health))["workers"]
        if all(w["state"] == "alive" and w["sessions"] == 0 for w in workers):
            return
        assert time.monotonic() < deadline, workers
        await asyncio.sleep(0.3)


def caller_of(image: np.ndarray) -> int:
    """Which caller's camera a received picture shows (its id row, read at the callers' 512 px)."""
    if image.shape[:2] != (512, 512):
        image = np.asarray(Image.fromarray(image).resize((512, 512)))
    return read_frame_id(image) >> COUNT_BITS


def test_the_front_door_lists_the_workers_and_carries_their_metrics(cluster):
    import urllib.request

    health = cluster.health()
    workers = health["workers"]
    assert [w["id"] for w in workers] == ["w0", "w1"], workers
    for w in workers:
        assert w["state"] == "alive" and w["node"] and w["sessions"] == 0, w
        assert {"calls", "total_fps", "share_fps", "guard"} <= set(w["capacity"]), w
        with open(f"/proc/{w['pid']}/cmdline") as f:  # the pid is the worker's own speakdraw serve
            assert f"--worker-id\0{w['id']}" in f.read()
    assert len({w["pid"] for w in workers}) == 2
    assert health["ray"]["address"] and health["engine_ready"] is True
    text = urllib.request.urlopen(cluster.base + "/metrics", timeout=10).read().decode()
    for worker_id in ("w0", "w1"):
        assert f'speakdraw_active_sessions{{worker="{worker_id}"}} 0.0' in text
        assert f'speakdraw_frames_in_total{{worker="{worker_id}"}}' in text
    assert 'speakdraw_cluster_workers{state="alive"} 2.0' in text
    assert text.count("# TYPE speakdraw_frames_in_total counter") == 1  # one family, a series per worker


async def test_a_session_on_the_second_worker_is_reached_through_the_front_door(cluster):
    """MJPEG (streamed: parts keep coming), snapshot, image prompt, WHEP and DELETE, all via the front door."""
    base = cluster.base
    clients = await connect_spread(base, 2, settings=SMALL, fps=15)
    try:
        assert {owner(c.session_id) for c in clients} == {"w0", "w1"}, [c.session_id for c in clients]
        mine = next(c for c in clients if owner(c.session_id) == "w1")
        sid = mine.session_id
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/sessions/{sid}/stream.mjpg") as resp:
                assert resp.status == 200
                parts = [p async for p in read_parts(resp, count=6, seconds=30)]
            assert len(parts) == 6
            assert all(caller_of(p.image()) == mine.caller for p in parts)  # this session's frames, not the other's
            assert parts[-1].at - parts[0].at > 0.1  # parts arrived one by one, as the worker sent them

            async with http.get(f"{base}/api/sessions/{sid}/snapshot.jpg") as resp:
                assert resp.status == 200 and resp.content_type == "image/jpeg"
                snapshot = np.asarray(Image.open(io.BytesIO(await resp.read())).convert("RGB"))
            assert caller_of(snapshot) == mine.caller

            png = io.BytesIO()
            Image.new("RGB", (64, 64), (200, 30, 30)).save(png, format="PNG")
            async with http.post(f"{base}/api/sessions/{sid}/image-prompt", data=png.getvalue()) as resp:
                body = await resp.json()
                # the owner's answer (passthrough takes no image prompts); a worker without the session says 404
                assert resp.status == 409 and body["error"]["code"] == "image_prompt_unavailable", body
            async with http.get(f"{base}/api/sessions/{sid}/image-prompt") as resp:
                body = await resp.json()
                assert resp.status == 200 and body["image_prompt"] is False and "passthrough" in body["reason"]

            viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            got: list[np.ndarray] = []
            viewer.addTransceiver("video", direction="recvonly")

            async def read(track) -> None:
                while True:
                    got.append((await track.recv()).to_ndarray(format="rgb24"))

            tasks = []
            viewer.on("track", lambda t: tasks.append(asyncio.ensure_future(read(t))))
            try:
                await viewer.setLocalDescription(await viewer.createOffer())
                headers = {"Content-Type": "application/sdp"}
                async with http.post(f"{base}/whep/{sid}", data=viewer.localDescription.sdp, headers=headers) as r:
                    assert r.status == 201, await r.text()
                    location, answer = r.headers["Location"], await r.text()
                assert location.startswith(f"/whep/{sid}/")
                await viewer.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
                deadline = time.monotonic() + 30
                while len(got) < 5 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                assert len(got) >= 5 and caller_of(got[-1]) == mine.caller
                async with http.delete(f"{base}{location}") as r:
                    assert r.status == 200
            finally:
                for task in tasks:
                    task.cancel()
                await viewer.close()

            async with http.delete(f"{base}/api/sessions/{sid}") as resp:
                assert resp.status == 200 and (await resp.json())["session_id"] == sid
            async with http.delete(f"{base}/api/sessions/{sid}") as resp:
                assert resp.status == 404 and (await resp.json())["error"]["code"] == "unknown_session"
            for bogus in ("nohyphen", "w9-0123", f"w0-{sid.partition('-')[2]}"):  # no such worker / not its own
                async with http.get(f"{base}/api/sessions/{bogus}/snapshot.jpg") as resp:
                    assert resp.status == 404, bogus
        deadline = time.monotonic() + 5
        while cluster.worker("w1")["sessions"] != 0:
            assert time.monotonic() < deadline, cluster.health()
            await asyncio.sleep(0.2)
        mine.session_id = None  # hung up already
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def test_whip_ingest_through_the_front_door_lands_on_a_worker_and_ends_there(cluster):
    from tests.rtc_client import PatternVideoTrack

    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender.addTransceiver(PatternVideoTrack(fps=15), direction="sendonly")
    try:
        await sender.setLocalDescription(await sender.createOffer())
        async with aiohttp.ClientSession() as http:
            headers = {"Content-Type": "application/sdp"}
            async with http.post(f"{cluster.base}/whip", data=sender.localDescription.sdp, headers=headers) as resp:
                assert resp.status == 201, await resp.text()
                location, answer = resp.headers["Location"], await resp.text()
            session_id = location.rsplit("/", 1)[1]
            assert location == f"/whip/{session_id}" and owner(session_id) in ("w0", "w1")
            await sender.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            deadline = time.monotonic() + 20
            while True:  # its output is there to watch, through the front door
                async with http.get(f"{cluster.base}/api/sessions/{session_id}/snapshot.jpg") as resp:
                    if resp.status == 200:
                        break
                assert time.monotonic() < deadline, resp.status
                await asyncio.sleep(0.3)
            async with http.delete(f"{cluster.base}{location}") as resp:
                assert resp.status == 200
            async with http.delete(f"{cluster.base}{location}") as resp:
                assert resp.status == 404
    finally:
        await sender.close()


async def _answer_ms(base: str) -> float:
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
            assert resp.status == 200, answer
            async with http.delete(f"{base}/api/sessions/{answer['session_id']}"):
                pass
        return elapsed
    finally:
        await client.pc.close()


async def test_the_front_door_adds_little_signaling_time(cluster):
    """p50 offer -> answer through the front door vs straight to a worker, alternating, same run: <= +20 ms."""
    direct = cluster.worker("w0")["url"]
    through, straight = [], []
    for _ in range(10):
        through.append(await _answer_ms(cluster.base))
        straight.append(await _answer_ms(direct))
    p50_front, p50_direct = statistics.median(through), statistics.median(straight)
    print(f"offer->answer p50: front door {p50_front:.1f} ms, straight {p50_direct:.1f} ms; load {os.getloadavg()}")
    assert p50_front <= p50_direct + 20.0, (through, straight)


async def test_two_front_doors_on_one_ray_cluster_behave_the_same(cluster, tmp_path):
    """The front door holds no call state: a second one on the same Ray finds the same workers, its offers
    land on them, and a session made through one is reached through the other. The second has a token: its
    routes need it (as `speakdraw serve`'s do), the workers behind it do not change."""
    token = "door-two-token"
    auth = {"Authorization": f"Bearer {token}"}
    address = cluster.health()["ray"]["address"]
    second = ClusterProcess(
        "--cpu-cores", "1", "--token", token, ray_address=address, log_path=tmp_path / "front-door-2.log"
    )  # fmt: skip
    clients: list[RtcClient] = []
    try:
        health2 = second.wait_ready(timeout=120)
        health1 = cluster.health()
        assert [(w["id"], w["pid"]) for w in health2["workers"]] == [(w["id"], w["pid"]) for w in health1["workers"]]
        clients = [
            RtcClient(cluster.base, caller=0, settings=SMALL),
            RtcClient(second.base, caller=1, settings=SMALL, token=token),
        ]
        for client in clients:
            await client.connect()
            await client.wait_frames(3)
        async with aiohttp.ClientSession() as http:
            for client, other, headers in ((clients[0], second.base, auth), (clients[1], cluster.base, {})):
                url = f"{other}/api/sessions/{client.session_id}/snapshot.jpg"
                async with http.get(url, headers=headers) as resp:
                    assert resp.status == 200
                    image = np.asarray(Image.open(io.BytesIO(await resp.read())).convert("RGB"))
                    assert caller_of(image) == client.caller
            async with http.get(f"{second.base}/api/sessions/{clients[0].session_id}/snapshot.jpg") as resp:
                assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"
            proxied = {"X-Forwarded-For": "203.0.113.9"}  # through a proxy, the tokenless door refuses too
            async with http.post(f"{cluster.base}/api/offer", json={}, headers=proxied) as resp:
                assert resp.status == 401
            # the routes any worker answers, through either door
            async with http.get(f"{cluster.base}/api/settings") as resp:
                assert resp.status == 200 and "schema" in await resp.json()
            async with http.get(f"{second.base}/api/ice", headers=auth) as resp:
                assert resp.status == 200 and "iceServers" in await resp.json()
            async with http.post(f"{cluster.base}/api/transcribe", data=b"RIFF....") as resp:
                assert resp.status == 503 and (await resp.json())["error"]["code"] == "stt_unavailable"  # --stt off
        deadline = time.monotonic() + 5
        while second.health()["sessions"] != 2 or cluster.health()["sessions"] != 2:
            assert time.monotonic() < deadline, (second.health(), cluster.health())
            await asyncio.sleep(0.2)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        assert second.stop() == []
    assert [w["pid"] for w in cluster.health()["workers"]] == [w["pid"] for w in health1["workers"]]  # still there


async def test_drain_stops_new_calls_to_a_worker_and_lets_its_calls_go_on(cluster):
    clients = await connect_spread(cluster.base, 2, settings=SMALL, fps=15)
    extra: list[RtcClient] = []
    try:
        on_w0 = next(c for c in clients if owner(c.session_id) == "w0")
        done = await asyncio.to_thread(cluster.cli, "drain", "w0")
        assert done.returncode == 0 and "draining" in done.stdout, done
        state, waited = await asyncio.to_thread(cluster.wait_state, "w0", {"draining"}, 5.0)
        assert waited <= 2.0
        extra = [RtcClient(cluster.base, caller=2 + i, settings=SMALL) for i in range(3)]
        for client in extra:
            await client.connect()
        assert {owner(c.session_id) for c in extra} == {"w1"}
        before = on_w0.frames_received
        await on_w0.wait_frames(10, timeout=20)  # its call goes on
        assert on_w0.frames_received >= before + 10
        done = await asyncio.to_thread(cluster.cli, "drain", "w0", "--undo")
        assert done.returncode == 0, done
        await asyncio.to_thread(cluster.wait_state, "w0", {"alive"}, 5.0)
        again = RtcClient(cluster.base, caller=5, settings=SMALL)
        extra.append(again)
        await again.connect()
        assert owner(again.session_id) == "w0"  # it has the most room again
    finally:
        await asyncio.gather(*(c.close() for c in clients + extra), return_exceptions=True)


@pytest.mark.slow
async def test_eight_callers_spread_over_two_workers_each_get_six_fps_and_no_cross_talk(cluster):
    spread: list[dict[str, int]] = []
    capacities: list[dict[str, dict]] = []  # each worker's capacity summary every 4 s: why its share is what it is

    async def watch() -> None:
        for i in range(7):
            await asyncio.sleep(4.0)
            workers = (await asyncio.to_thread(cluster.health))["workers"]
            capacities.append({w["id"]: w.get("capacity") for w in workers})
            if i == 1:  # connected, warmed up, measuring
                spread.append({w["id"]: w["sessions"] for w in workers})

    await idle(cluster)
    watcher = asyncio.ensure_future(watch())
    # 256², 15 fps offered: the 8 callers share this process (8 VP8 encoders and decoders on these 2 cores)
    run = await run_callers(cluster.base, callers=8, seconds=20.0, fps=15.0, settings=SMALL, warmup_s=3.0)
    await watcher
    s = run.summary()
    print(s, spread, "load", os.getloadavg())
    for seen in capacities:
        print(seen)
    assert spread and all(n >= 3 for n in spread[0].values()) and sum(spread[0].values()) == 8, spread
    assert s["foreign_frames"] == 0, s
    assert s["fps_min"] >= 6, s


def udp_sockets(pid: int) -> int:
    """UDP sockets that process `pid` holds (its fds against /proc/net/udp{,6})."""
    inodes = set()
    for name in ("udp", "udp6"):
        with open(f"/proc/{pid}/net/{name}") as f:
            inodes |= {line.split()[9] for line in list(f)[1:]}
    held = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        held += target.startswith("socket:[") and target[8:-1] in inodes
    return held


@pytest.mark.slow
async def test_the_front_door_adds_nothing_to_the_media_path(cluster, tmp_path):
    """4 callers, 256², 15 fps: the round trip through the cluster is one `speakdraw serve`'s (the workers' flags)
    with the same callers, within this machine's noise. Both sets run at the same time, in 5 rounds of 5 s, and the
    median round's ratio is judged: the load moves the round trip by 2x from one 5 s run to the next (measured),
    so runs one after the other compare the load, not the paths; and at a ~10 ms p50 (the callers' receivers hand
    a frame on at its last packet) one round's ratio alone swung 0.71-1.37 here (39 rounds: mean 1.04, sd 0.14,
    4 above 1.25), and CI read 34 vs 28 ms from two pooled rounds. A median of 5 above 1.25 takes 3 rounds above it.
    The media cannot pass the front door: it holds no UDP socket while the calls run; the workers do. That is
    the check a relay through the front door cannot pass; the ratio is the check that a user gets the same."""
    single = ServerProcess("--cpu-cores", "1", "--min-fps", "4", log_path=tmp_path / "single.log")
    ratios: list[float] = []
    p50s: list[dict[str, float]] = []
    try:
        single.wait_ready()
        health = cluster.health()
        sockets: list[tuple[int, list[int]]] = []
        splits: list[list[int]] = []

        async def look() -> None:
            await asyncio.sleep(6.0)
            sockets.append((udp_sockets(health["pid"]), [udp_sockets(w["pid"]) for w in health["workers"]]))
            splits.append([w["sessions"] for w in (await asyncio.to_thread(cluster.health))["workers"]])

        for _ in range(5):
            await idle(cluster)
            looker = asyncio.ensure_future(look())
            runs = await asyncio.gather(
                *(
                    run_callers(base, callers=4, seconds=5.0, fps=15.0, settings=SMALL, warmup_s=3.0)
                    for base in (cluster.base, single.base)
                )
            )
            await looker
            p50 = {}
            for name, run in zip(("cluster", "serve"), runs, strict=True):
                assert run.summary()["foreign_frames"] == 0
                p50[name] = float(np.percentile([a for c in run.callers for _, a in c.ages_ms], 50))
            p50s.append({k: round(v, 1) for k, v in p50.items()})
            ratios.append(p50["cluster"] / p50["serve"])
    finally:
        single.stop()
    print(f"round trip p50 by round: {p50s}; cluster/serve {[round(r, 2) for r in ratios]}; calls per worker "
          f"{splits}; UDP sockets (front door, workers) {sockets}; load {os.getloadavg()}")  # fmt: skip
    assert all(front == 0 and sum(workers) > 0 for front, workers in sockets), sockets
    assert statistics.median(ratios) <= 1.25, (ratios, p50s)


@pytest.mark.slow
async def test_sigterm_on_a_worker_drains_it_then_ray_starts_it_afresh(cluster):
    """SIGTERM on a worker's server: no new calls to it (its call goes on); once that call has hung up it exits,
    and Ray restarts it: a rolling restart of one worker."""
    await idle(cluster)
    first = RtcClient(cluster.base, caller=0, settings=SMALL, fps=15)  # both idle: the first offer goes to w1
    others: list[RtcClient] = []
    try:
        await first.connect()
        await first.wait_frames(3)
        worker_id = owner(first.session_id)
        pid = cluster.worker(worker_id)["pid"]
        os.kill(pid, signal.SIGTERM)
        _, waited = await asyncio.to_thread(cluster.wait_state, worker_id, {"draining"}, 5.0)
        assert waited <= 2.0
        others = [RtcClient(cluster.base, caller=1 + i, settings=SMALL) for i in range(2)]
        for client in others:
            await client.connect()
        assert all(owner(c.session_id) != worker_id for c in others)
        received = first.frames_received
        await first.wait_frames(10, timeout=20)  # the drained worker's call goes on
        assert first.frames_received >= received + 10 and cluster.worker(worker_id)["pid"] == pid
    finally:
        await asyncio.gather(*(c.close() for c in [first, *others]), return_exceptions=True)
    await asyncio.to_thread(cluster.wait_state, worker_id, {"dead", "starting"}, 20.0)  # its last call ended
    await asyncio.to_thread(cluster.wait_state, worker_id, {"alive"}, 120.0)
    assert cluster.worker(worker_id)["pid"] != pid


async def test_sigkill_of_a_workers_ray_actor_takes_its_server_along_and_ray_restarts_both(cluster):
    await idle(cluster)
    before = cluster.worker("w0")
    os.kill(before["actor_pid"], signal.SIGKILL)
    await asyncio.to_thread(cluster.wait_state, "w0", {"dead"}, 5.0)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{before['pid']}") and _proc_state(before["pid"]) != "Z":
        assert time.monotonic() < deadline, "the server outlived its actor"
        await asyncio.sleep(0.1)
    await asyncio.to_thread(cluster.wait_state, "w0", {"alive"}, 120.0)
    after = cluster.worker("w0")
    assert after["pid"] != before["pid"] and after["actor_pid"] != before["actor_pid"]


def _proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


class RejoiningCaller:
    """An aiortc caller that does what the page does when its call is lost (web/call.js): a new offer through the
    front door with `resume` and the settings it carries. Lost: no frame for `silence_s`."""

    def __init__(self, base: str, index: int, settings: dict, silence_s: float = 1.0) -> None:
        self.base, self.index, self.settings, self.silence_s = base, index, settings, silence_s
        self.client = self._client()
        self.first_session: str | None = None
        self.rejoined_at: float | None = None
        self.frames_before_rejoin = 0
        self.old: list[RtcClient] = []
        self.attempts: list[tuple[float, str | None, str]] = []  # (when, session id, outcome) of each rejoin try

    def _client(self, **extra) -> RtcClient:
        client = RtcClient(self.base, caller=self.index, settings=self.settings, fps=10, keep_frames=3, **extra)
        client.video.width = client.video.height = 256  # light on this machine's 2 cores (ids are not read here)
        return client

    def frames(self) -> int:
        return self.frames_before_rejoin + self.client.frames_received

    async def connect(self) -> None:
        await self.client.connect()
        await self.client.wait_frames(3)
        self.first_session = self.client.session_id

    async def keep_alive(self, until: float) -> None:
        while time.monotonic() < until and self.rejoined_at is None:
            await asyncio.sleep(0.1)
            last = self.client.frames[-1].at if self.client.frames else 0.0
            if time.monotonic() - last < self.silence_s:
                continue
            old = self.client
            self.old.append(old)
            self.frames_before_rejoin = old.frames_received
            for _attempt in range(6):  # the page's tries, shortened
                new = self._client(offer_extra={"resume": old.session_id})
                tried_at = time.monotonic()
                try:
                    await new.connect()
                    await new.wait_frames(3, timeout=10)
                except (RuntimeError, TimeoutError, aiohttp.ClientError) as exc:
                    self.attempts.append((tried_at, new.session_id, str(exc)[-160:]))
                    await new.close(hang_up=True)
                    await asyncio.sleep(1.0)
                    continue
                self.attempts.append((tried_at, new.session_id, "ok"))
                self.client, self.rejoined_at = new, time.monotonic()
                break

    async def close(self) -> None:
        for client in [*self.old, self.client]:
            await client.close(hang_up=client is self.client)


@pytest.mark.slow
async def test_sigkill_of_a_worker_its_callers_rejoin_on_the_other_the_others_see_no_gap(cluster):
    """Kill one worker's server mid-call: /healthz says dead within 2 s and new offers go elsewhere; its callers
    rejoin through the front door on a live worker (the other one; the restarted one if the other counts itself
    full) with their prompt, seed and mode within 10 s; the other worker's callers keep >= 90 % of their fps;
    Ray restarts the worker, /healthz says dead then alive, and a new call lands on it."""
    await idle(cluster)
    callers = [
        RejoiningCaller(cluster.base, i, {**SMALL, "prompt": f"a fox number {i}", "seed": 1000 + i, "mode": "human"})
        for i in range(4)
    ]
    try:
        for caller in callers:
            await caller.connect()
        by_worker: dict[str, list[RejoiningCaller]] = {}
        for caller in callers:
            by_worker.setdefault(owner(caller.first_session), []).append(caller)
        # by room: 2 and 2 when both workers measure alike, 3 and 1 when the tests before left them apart
        assert sorted(by_worker) == ["w0", "w1"], {k: len(v) for k, v in by_worker.items()}
        victim = owner(callers[0].first_session)
        survivor = "w1" if victim == "w0" else "w0"
        await asyncio.sleep(3.0)  # settled
        counts0 = [c.frames() for c in by_worker[survivor]]
        await asyncio.sleep(6.0)
        base_fps = [(c.frames() - n) / 6.0 for c, n in zip(by_worker[survivor], counts0, strict=True)]

        pid = cluster.worker(victim)["pid"]
        counts1 = [c.frames() for c in by_worker[survivor]]
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        keepers = [asyncio.ensure_future(c.keep_alive(killed_at + 20)) for c in by_worker[victim]]
        state, waited = await asyncio.to_thread(cluster.wait_state, victim, {"dead"}, 10.0)
        print(f"{victim} dead after {waited:.2f} s")
        assert waited <= 2.0, waited

        seen: list[str] = []

        async def watch_victim() -> None:
            while True:
                await asyncio.sleep(0.2)
                w = await asyncio.to_thread(cluster.worker, victim)
                if not seen or seen[-1] != w["state"]:
                    seen.append(w["state"])
                    print(
                        f"  {time.monotonic() - killed_at:.1f} s after the kill: {victim} {w['state']}, pid {w['pid']}"
                    )
                if w["state"] == "alive":
                    return

        watcher = asyncio.ensure_future(watch_victim())  # the states /healthz shows, for the log
        probe = RtcClient(cluster.base, caller=7, settings=SMALL)  # a new offer now goes to the live worker
        await probe.connect()
        assert owner(probe.session_id) == survivor
        await probe.close()

        await asyncio.gather(*keepers)
        landed: dict[int, str] = {}
        for caller in by_worker[victim]:
            print("rejoin tries", [(round(t - killed_at, 2), sid, what) for t, sid, what in caller.attempts])
            assert caller.rejoined_at is not None, "a caller of the dead worker did not rejoin"
            assert caller.rejoined_at - killed_at <= 10.0, caller.rejoined_at - killed_at
            # a new call on a live worker: the survivor, or (when the survivor's capacity model counted itself full
            # while this machine's cores were also restarting the other) the restarted worker
            assert caller.client.session_id != caller.first_session and caller.client.answer["resumed"] is False
            landed[caller.index] = owner(caller.client.session_id)
            reply = await caller.client.request({"type": "settings", "settings": {}}, "settings")
            carried = {k: reply["settings"][k] for k in ("prompt", "seed", "mode")}
            assert carried == {k: caller.settings[k] for k in ("prompt", "seed", "mode")}, carried
        await asyncio.sleep(max(0.0, killed_at + 10.0 - time.monotonic()))
        elapsed = time.monotonic() - killed_at
        after_fps = [(c.frames() - n) / elapsed for c, n in zip(by_worker[survivor], counts1, strict=True)]
        print(f"survivor fps before {base_fps} after {after_fps}; load {os.getloadavg()}")
        assert all(a >= 0.9 * b for a, b in zip(after_fps, base_fps, strict=True)), (base_fps, after_fps)

        state, waited = await asyncio.to_thread(cluster.wait_state, victim, {"alive"}, 120.0)
        await watcher
        assert seen[0] == "dead" and seen[-1] == "alive", seen
        restarted = cluster.worker(victim)
        assert restarted["pid"] != pid  # so a rejoin that landed on `victim` is on its new server, never the dead one
        print(f"rejoined on: {landed} (survivor {survivor})")
        print(f"worker {victim} alive again {time.monotonic() - killed_at:.1f} s after the kill: {restarted}")
        late = RtcClient(cluster.base, caller=6, settings=SMALL)  # the restarted worker has the most room
        await late.connect()
        await late.wait_frames(3)
        assert owner(late.session_id) == victim
        await late.close()
    finally:
        await asyncio.gather(*(c.close() for c in callers), return_exceptions=True)


# Last in the module: Playwright's sync API keeps an event loop of its own running in this thread until the
# module's Chromium closes, and the async tests above could not start theirs.
@pytest.mark.browser
def test_chromium_joins_through_the_front_door(cluster, camera_chromium):
    context = camera_chromium.new_context()
    page = context.new_page()
    try:
        page.goto(cluster.base + "/")
        page.wait_for_selector("#start:not([disabled])", timeout=20_000)
        page.click("#start")
        page.wait_for_function(
            "() => { const v = document.getElementById('remote-video'); return v.videoWidth && v.currentTime > 2; }",
            timeout=45_000,
        )
        session_id = page.evaluate("window.speakdraw.state.call.sessionId")
        assert owner(session_id) in ("w0", "w1")
        assert cluster.worker(owner(session_id))["sessions"] == 1
        # the data channel reaches the worker itself: its stats come back once a second
        page.wait_for_function(
            "() => parseFloat(document.getElementById('stats-fps-out').textContent) > 0", timeout=15_000
        )
        page.click("#stop")  # the page's DELETE goes through the front door to the worker
        deadline = time.monotonic() + 10
        while cluster.health()["sessions"] != 0:
            assert time.monotonic() < deadline, cluster.health()
            time.sleep(0.2)
    finally:
        context.close()
