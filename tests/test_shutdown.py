"""Graceful shutdown (issue 6, point 4): SIGTERM/SIGINT during a live call exits cleanly within 5 s.

"During a live call" means everything that could hold the process open: a WebRTC call, an MJPEG viewer, and
an MJPEG viewer that stopped reading. SIGTERM comes once that viewer's socket is full (aiohttp would otherwise
wait 60 s for its handler, blocked in a write); SIGINT comes with a slow model step in flight.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import aiohttp
import pytest

from tests.mjpeg_client import NoisyPatternTrack, read_parts
from tests.rtc_client import RtcClient

EXIT_WITHIN_S = 5.0
# ~20 KB parts at 30 fps: more than the ~3 MiB a loopback socket buffers, so the server's write blocks.
FILL_S = 8.0


@pytest.mark.parametrize(
    "sig, model_ms, fill_s", [(signal.SIGTERM, "0", FILL_S), (signal.SIGINT, "150", 0.0)], ids=["SIGTERM", "SIGINT"]
)
async def test_signal_during_a_call_exits_cleanly(start_server, sig, model_ms, fill_s):
    server = start_server("--simulate-model-ms", model_ms)
    client = RtcClient(server.base)
    client.video = NoisyPatternTrack(client.fps)
    await client.connect()
    stuck = socket.socket()
    try:
        await client.wait_frames(5)
        url = f"{server.base}/api/sessions/{client.session_id}/stream.mjpg"
        # A viewer that never reads: the server's writes to it block once the socket buffers are full.
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", server.port))
        stuck.sendall(f"GET /api/sessions/{client.session_id}/stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await asyncio.sleep(fill_s)
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert resp.status == 200
            assert len([p async for p in read_parts(resp, count=3)]) == 3
            await asyncio.sleep(0.1)  # let a model step start

            start = time.monotonic()
            server.proc.send_signal(sig)
            while server.proc.poll() is None and time.monotonic() - start < EXIT_WITHIN_S:
                await asyncio.sleep(0.05)
            took = time.monotonic() - start
            assert server.proc.poll() is not None, f"still running {EXIT_WITHIN_S} s after {sig.name}"
            assert server.proc.returncode == 0, server.log_text()[-3000:]
            # The open viewer saw its stream end (closing boundary or EOF), not a hang.
            rest = await asyncio.wait_for(_drain(resp), timeout=2)
            assert len(rest) < 60
    finally:
        stuck.close()
        await client.close(hang_up=False)
    log = server.log_text()
    assert "shutting down" in log
    assert "Traceback" not in log, log[-3000:]
    print(f"{sig.name}: exited 0 in {took:.2f} s")


async def _drain(resp) -> list:
    parts = []
    try:
        async for p in read_parts(resp):
            parts.append(p)
    except (aiohttp.ClientPayloadError, EOFError, ConnectionError):
        pass  # the connection was closed under the reader: also an end
    return parts


async def test_sigterm_with_a_long_model_step_in_flight(start_server):
    """A CPU diffusion step can take seconds; shutdown does not wait for it past a short grace."""
    server = start_server("--simulate-model-ms", "8000")
    client = RtcClient(server.base)
    await client.connect()
    try:
        await asyncio.sleep(1.0)  # the first frame is in the worker now, for 8 s
        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        while server.proc.poll() is None and time.monotonic() - start < EXIT_WITHIN_S:
            await asyncio.sleep(0.05)
        took = time.monotonic() - start
        assert server.proc.poll() == 0, f"not exited with 0 {EXIT_WITHIN_S} s after SIGTERM"
    finally:
        await client.close(hang_up=False)
    assert "exiting without waiting for busy worker threads: speakdraw-video" in server.log_text()
    print(f"exited 0 in {took:.2f} s with a model step in flight")


@pytest.mark.slow
async def test_sigterm_stops_every_thread_the_server_started(start_server):
    """A call with speech and human mode on: during it the named worker threads run; after SIGTERM none is left."""
    from tests.speechdata import PcmAudioTrack, have_espeak, speech_track

    if not have_espeak():
        pytest.skip("espeak-ng not installed")
    server = start_server(stt="faster-whisper", matting="rvm")
    audio, _ = speech_track([("a red house by the sea", "en-us")], gap_s=0.5, rate=48000)
    client = RtcClient(server.base, audio=PcmAudioTrack(audio), settings={"mode": "human", "width": 256, "height": 256})
    await client.connect()
    try:
        await client.wait_frames(10)
        await client.expect("transcript", timeout=30)  # the speech thread has worked
        async with aiohttp.ClientSession() as http, http.get(f"{server.base}/healthz") as resp:
            during = set((await resp.json())["worker_threads"])
        assert {"speakdraw-video", "speakdraw-speech"} <= during, during
        assert any(name.startswith("speakdraw-matte") for name in during), during
        server.proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        while server.proc.poll() is None and time.monotonic() - start < EXIT_WITHIN_S * 2:
            await asyncio.sleep(0.05)
        assert server.proc.poll() == 0, server.log_text()[-3000:]
    finally:
        await client.close(hang_up=False)
    assert "speakdraw threads alive after shutdown: []" in server.log_text(), server.log_text()[-3000:]
