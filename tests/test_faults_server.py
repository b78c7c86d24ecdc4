"""Issue 14 against the real `speakdraw serve` process: slots of calls that never connect are freed,
the token never reaches the log, and the banner comes before the models."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection

from tests.rtc_client import PatternVideoTrack, RtcClient
from tests.serverproc import ServerProcess

TOKEN = "Sekr3tT0kenNeverLogged"


async def test_an_offer_that_never_connects_is_closed_after_the_connect_timeout(start_server):
    server = start_server("--connect-timeout", "2")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(PatternVideoTrack())
    pc.createDataChannel("control")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer"}
        async with aiohttp.ClientSession() as http, http.post(server.base + "/api/offer", json=body) as resp:
            assert resp.status == 200, await resp.text()
        # the answer is never applied: this client never connects
        health = server.health()
        assert health["sessions"] == 1 and health["peer_connections"] == 1, health
        deadline = time.monotonic() + 12
        while (server.health()["sessions"], server.health()["peer_connections"]) != (0, 0):
            assert time.monotonic() < deadline, server.health()
            await asyncio.sleep(0.2)
        assert "not connected after 2 s, closing" in server.log_text()
    finally:
        await pc.close()
    client = RtcClient(server.base)  # and a call that does connect is not cut at 2 s
    try:
        await client.connect()
        await client.wait_frames(5)
        await asyncio.sleep(2.5)
        frames = client.frames_received
        await client.wait_frames(5)
        assert client.frames_received > frames and server.health()["sessions"] == 1
    finally:
        await client.close()


async def test_the_token_never_reaches_the_log(start_server):
    server = start_server("--token", TOKEN, "--log-level", "info")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    client = RtcClient(server.base, token=TOKEN)
    try:
        await client.connect()
        await client.wait_frames(3)
        page = f"{server.base}/?token={TOKEN}"
        async with aiohttp.ClientSession() as http:
            async with http.get(page) as resp:
                assert resp.status == 200
            async with http.get(f"{server.base}/static/api.js?token={TOKEN}", headers={"Referer": page}) as resp:
                assert resp.status == 200
            async with http.get(f"{server.base}/api/settings?a=1&token={TOKEN}&b=2", headers={"Referer": page}) as resp:
                assert resp.status == 200
            mjpeg = f"{server.base}/api/sessions/{client.session_id}/stream.mjpg?token={TOKEN}"
            async with http.get(mjpeg, headers={"Referer": page}) as resp:
                assert resp.status == 200
                await resp.content.read(20_000)  # some of the live stream
            async with http.get(f"{server.base}/api/settings?token={TOKEN}x") as resp:
                assert resp.status == 401  # a wrong token near the real one is not logged either
            async with http.get(f"{server.base}/api/sessions/nope/stream.mjpg?token={TOKEN}") as resp:
                assert resp.status == 404
            async with http.delete(f"{server.base}/api/sessions/{client.session_id}", headers=auth) as resp:
                assert resp.status == 200
        await asyncio.sleep(1.0)  # the access log is written after the response
    finally:
        await client.close(hang_up=False)
    log = server.log_text()
    assert "stream.mjpg?token=<redacted>" in log  # the requests were logged, redacted
    assert "GET /?token=<redacted>" in log
    # the banner on stdout is the one place the token is shown on purpose (the join URL to open)
    leaks = [line for line in log.splitlines() if TOKEN in line and not line.lstrip().startswith("desktop:")]
    assert not leaks, leaks


def test_the_banner_prints_before_the_models_are_ready(tmp_path):
    """sd-turbo with no weights and no network: loading takes a while and falls back; the URLs come first."""
    env = {
        "SPEAKDRAW_HOME": str(tmp_path / "home"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "SPEAKDRAW_OFFLINE": "1",
    }
    server = ServerProcess(engine="sd-turbo", log_path=tmp_path / "server.log", env=env)
    try:
        deadline = time.monotonic() + 120
        while "SpeakDraw is up" not in server.log_text():
            assert server.proc.poll() is None, server.log_text()
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.05)
        with urllib.request.urlopen(server.base + "/healthz", timeout=5) as resp:
            assert resp.status == 200  # the URLs printed are already served
        health = server.wait_ready()
        assert health["engine"] in ("style", "passthrough")
        deadline = time.monotonic() + 10
        while "SpeakDraw models ready" not in server.log_text():
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.05)
        log = server.log_text()
        assert log.index("SpeakDraw is up") < log.index("SpeakDraw models ready")
        banner = log[log.index("SpeakDraw is up") :].splitlines()[1]
        assert "loading" in banner, banner
        assert "warning" in log[log.index("SpeakDraw models ready") :]  # the fallback is said after
    finally:
        server.stop()
