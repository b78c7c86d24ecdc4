"""MJPEG output and snapshots of a live call (issue 6, point 1), against the real server subprocess.

The call runs the passthrough engine with the `invert` effect, so a JPEG that shows inverted test-pattern
colours (and the inverted frame-id blocks of frames the client really sent) is the session's *output*.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time

import aiohttp
import numpy as np
import pytest

from tests.mjpeg_client import NoisyPatternTrack, Part, read_parts
from tests.rtc_client import QUADRANT_COLOURS, RtcClient, quadrant_means, read_frame_id

TOKEN = "mjpeg-test-token"
INVERTED = 255 - QUADRANT_COLOURS.astype(float)


@pytest.fixture
def server(start_server):
    # explicit token: required even on loopback; frames are compared at 512 px
    return start_server("--token", TOKEN, "--degradation", "maintain-resolution")


@pytest.fixture
async def call(server):
    client = RtcClient(server.base, token=TOKEN, settings={"passthrough_effect": "invert"})
    await client.connect()
    await client.wait_frames(10)
    yield client
    await client.close()


def stream_url(server, call, token: str | None = TOKEN, what: str = "stream.mjpg", **query) -> str:
    params = {**({"token": token} if token is not None else {}), **query}
    qs = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{server.base}/api/sessions/{call.session_id}/{what}" + (f"?{qs}" if qs else "")


async def collect(url: str, count: int | None = None, seconds: float | None = None) -> list[Part]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return [p async for p in read_parts(resp, count=count, seconds=seconds)]


async def fresh_stats(call: RtcClient) -> dict:
    """The next `stats` message sent from now on (older queued messages are skipped)."""
    while not call.messages.empty():
        call.messages.get_nowait()
    return await call.expect("stats", timeout=5)


def assert_output_frames(parts: list[Part], call: RtcClient) -> None:
    ids = []
    for p in parts:
        img = p.image()
        assert img.shape == (512, 512, 3)
        assert np.abs(quadrant_means(img) - INVERTED).max() < 30, quadrant_means(img)
        ids.append(read_frame_id(img, inverted=True))
    assert all(i in call.video.sent_at for i in ids), ids
    assert ids == sorted(ids), ids  # newest frame wins: never an older frame after a newer one
    assert len(set(ids)) == len(ids), ids  # one part per output frame, no repeats


async def test_two_viewers_read_valid_jpeg_parts_of_the_output(server, call):
    a, b = await asyncio.wait_for(
        asyncio.gather(collect(stream_url(server, call), count=12), collect(stream_url(server, call), count=12)),
        timeout=30,
    )
    assert len(a) == 12 and len(b) == 12
    assert_output_frames(a, call)
    assert_output_frames(b, call)


async def test_stream_is_paced_to_the_output_rate(server, call):
    before = await fresh_stats(call)
    parts = await collect(stream_url(server, call), seconds=4.0)
    after = await fresh_stats(call)
    sent = after["frames_out"] - before["frames_out"]  # frames handed to WebRTC over ≥ the same window
    assert len(parts) <= sent + 2, (len(parts), sent)  # never faster than the call's own output
    assert len(parts) >= 0.5 * 4.0 * after["fps_out"] > 0, (len(parts), after["fps_out"])

    capped = await collect(stream_url(server, call, fps=4), seconds=3.0)
    assert 6 <= len(capped) <= 14, len(capped)
    assert_output_frames(capped, call)


async def test_snapshot_is_the_current_output_frame(server, call):
    async with aiohttp.ClientSession() as http:
        async with http.get(stream_url(server, call, what="snapshot.jpg")) as resp:
            assert resp.status == 200
            assert resp.content_type == "image/jpeg"
            body = await resp.read()
    part = Part(body, time.monotonic())
    assert body[:2] == b"\xff\xd8" and body[-2:] == b"\xff\xd9"
    assert_output_frames([part], call)
    newest = max(call.video.sent_at)
    assert newest - read_frame_id(part.image(), inverted=True) < 30  # about the newest frame, not a stale one


async def test_token_and_errors(server, call):
    async with aiohttp.ClientSession() as http:
        for what in ("stream.mjpg", "snapshot.jpg"):
            for token in (None, "wrong-token"):
                async with http.get(stream_url(server, call, token=token, what=what)) as resp:
                    assert resp.status == 401, (what, token)
                    assert (await resp.json())["error"]["code"] == "unauthorized"
            async with http.get(
                f"{server.base}/api/sessions/{call.session_id}/{what}", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp:
                assert resp.status == 200  # the header works as well as ?token=
                if what == "stream.mjpg":
                    assert [p async for p in read_parts(resp, count=2)]
            async with http.get(f"{server.base}/api/sessions/nope/{what}?token={TOKEN}") as resp:
                assert resp.status == 404
                assert (await resp.json())["error"]["code"] == "unknown_session"
        for bad in ("0", "-3", "abc", "1000"):
            async with http.get(stream_url(server, call, fps=bad)) as resp:
                assert resp.status == 400, bad
                assert (await resp.json())["error"]["code"] == "invalid_fps"


async def test_stream_ends_when_the_call_hangs_up(server, call):
    async with aiohttp.ClientSession() as http, http.get(stream_url(server, call)) as resp:
        assert resp.status == 200
        first = [p async for p in read_parts(resp, count=3)]
        assert len(first) == 3
        await call.close()
        start = time.monotonic()
        rest = await asyncio.wait_for(_drain(resp), timeout=5)  # ends with the closing boundary
        assert time.monotonic() - start < 5
        assert len(rest) < 30
    assert server.health()["sessions"] == 0


async def _drain(resp) -> list[Part]:
    return [p async for p in read_parts(resp)]


# ---- slow readers --------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class SlowReader:
    """A raw socket viewer with a tiny receive buffer that reads `rate` bytes per second."""

    def __init__(self, url_path: str, port: int, rate: int = 400) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(f"GET {url_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self.sock.setblocking(False)
        self.rate = rate
        self.received = b""
        self.closed_by_server = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        chunk = max(1, self.rate // 10)
        while True:
            await asyncio.sleep(0.1)
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, chunk), 0.5)
            except asyncio.TimeoutError:
                continue
            if not data:
                self.closed_by_server = True
                return
            self.received += data

    def close(self) -> None:
        self.sock.close()


async def measure(call: RtcClient, seconds: float) -> dict[str, float]:
    """Mean fps_out and median shown-frame age from the call's own stats messages over `seconds`."""
    fps, age = [], []
    await fresh_stats(call)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stats = await call.expect("stats", timeout=5)
        fps.append(stats["fps_out"])
        age.append(stats["shown_age_ms"])
    return {"fps_out": statistics.mean(fps), "shown_age_ms": statistics.median(age)}


@pytest.mark.slow
async def test_slow_readers_neither_grow_memory_nor_delay_the_call(server):
    pid = server.proc.pid
    call = RtcClient(server.base, token=TOKEN, settings={"passthrough_effect": "invert"})
    call.video = NoisyPatternTrack(call.fps)
    await call.connect()
    try:
        await _slow_readers(server, call, pid)
    finally:
        await call.close()


async def _rss_samples(pid: int, seconds: float) -> list[int]:
    """The server's RSS (KiB) once a second for `seconds`, the first at once."""
    samples = [rss_kib(pid)]
    for _ in range(int(seconds)):
        await asyncio.sleep(1.0)
        samples.append(rss_kib(pid))
    return samples


async def _slow_readers(server, call: RtcClient, pid: int) -> None:
    await call.wait_frames(30)
    # Warm the JPEG path once with a normal viewer, so its one-time allocations are not counted below.
    assert len(await collect(stream_url(server, call), count=10)) == 10
    # The baselines have the same normal viewer as the loaded run below, so they differ only by the slow
    # readers (its JPEG encoding and the test's own reading cost CPU the call shares on 2 cores). One before and
    # one after: other work on this machine moves the call's rate from one window to the next (a CI run read
    # 25.5 fps, then 16.5 with the readers), so the loaded window is judged against the lower of the two.
    _, before = await asyncio.gather(collect(stream_url(server, call), seconds=6.0), measure(call, 6.0))

    path = f"/api/sessions/{call.session_id}/stream.mjpg?token={TOKEN}"
    readers = [SlowReader(path, server.port) for _ in range(4)]
    tasks = [asyncio.create_task(r.run()) for r in readers]
    try:
        # Let their sockets fill up first (kernel buffers, then any user-space one): what a connection
        # holds once is not growth; what grows after that is.
        await asyncio.sleep(6.0)
        # Meanwhile a normal viewer must still get fresh frames at the output rate.
        fast, loaded, rss = await asyncio.gather(
            collect(stream_url(server, call), seconds=8.0), measure(call, 8.0), _rss_samples(pid, 8.0)
        )
        assert all(not r.closed_by_server for r in readers)
        assert all(0 < len(r.received) < 20_000 for r in readers), [len(r.received) for r in readers]
    finally:
        for t in tasks:
            t.cancel()
        for r in readers:
            r.close()
    _, after = await asyncio.gather(collect(stream_url(server, call), seconds=6.0), measure(call, 6.0))

    steps_mib = [(b - a) / 1024 for a, b in zip(rss, rss[1:], strict=False)]
    growth_mib = (rss[-1] - rss[0]) / 1024
    print(
        f"before {before}  4 slow readers {loaded}  after {after}  fast viewer {len(fast)} parts/8s  "
        f"RSS {growth_mib:+.1f} MiB, per second {[round(x, 2) for x in steps_mib]}"
    )
    # Queuing parts per viewer grows ~4 x 30/s x 20 KB = 2.4 MB/s here (checked: +59 MiB over the 8 s), every
    # second. The allocator's one-time steps (a CI run: +13.5 MiB over 8 s, where quiet runs read +0-0.5) fall in
    # one second or two: the median second tells a queue from them, at a tenth of that queue's rate.
    assert statistics.median(steps_mib) < 0.25, steps_mib
    assert growth_mib < 24, steps_mib
    baseline = min(before, after, key=lambda m: m["fps_out"])
    assert loaded["fps_out"] >= 0.8 * baseline["fps_out"], (before, loaded, after)
    # not delayed: a queue behind slow readers would add seconds; the slack is scheduling noise on a busy machine
    age = max(before["shown_age_ms"], after["shown_age_ms"])
    assert loaded["shown_age_ms"] <= age + max(60.0, age), (before, loaded, after)
    assert len(fast) >= 0.5 * 8.0 * loaded["fps_out"], (len(fast), loaded)
    assert_output_frames(fast, call)
    assert statistics.mean(len(p.jpeg) for p in fast) > 10_000  # the noise made it through: big parts
