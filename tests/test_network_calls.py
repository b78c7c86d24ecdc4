"""Calls on "real network" terms (issue 15): relay-only through coturn, TURN credentials, fixed media ports,
H.264, resume. aiortc clients against the real server; each test starts its own coturn on loopback."""

from __future__ import annotations

import asyncio
import re
import socket
import time

import aiohttp
import pytest
from aioice import turn
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from server import ice
from tests.coturn import Coturn
from tests.rtc_client import RtcClient


@pytest.fixture
def coturn(tmp_path):
    server = Coturn(tmp_path).start()
    yield server
    server.stop()


async def fetch_ice(base: str, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/api/ice", headers=headers) as resp:
            assert resp.status == 200
            return await resp.json()


def relay_config(ice_body: dict) -> RTCConfiguration:
    servers = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
        for s in ice_body["iceServers"]
    ]
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def selected_pair(client: RtcClient):
    """The nominated ICE pair of the client's (bundled) transport (aioice internals: test-only)."""
    connection = client.pc.sctp.transport.transport.iceGatherer._connection
    return connection._nominated.get(1)


def candidate_lines(sdp: str) -> list[str]:
    return [line for line in sdp.splitlines() if line.startswith("a=candidate:")]


async def test_relay_only_call_through_coturn(start_server, coturn):
    server = start_server("--turn-url", coturn.url, "--turn-secret", coturn.secret)
    body = await fetch_ice(server.base)
    minted = body["iceServers"][-1]
    assert minted["urls"] == [coturn.url] and int(minted["username"].split(":")[0]) > time.time()
    client = RtcClient(server.base, rtc_config=relay_config(body), settings={"passthrough_effect": "invert"})
    try:
        await client.connect(timeout=30)
        await client.wait_frames(10, timeout=30)
        offer_types = {line.split()[7] for line in candidate_lines(client.pc.localDescription.sdp)}
        assert offer_types == {"relay"}  # the client offered relayed candidates only
        assert "typ relay" in client.answer["sdp"]  # the server's own connection gathered through coturn too
        pair = selected_pair(client)
        assert pair is not None and pair.local_candidate.type == "relay"
        assert pair.local_candidate.host == "127.0.0.1"  # coturn's relay address
    finally:
        await client.close()


async def test_turn_credentials_coturn_accepts_and_refuses(coturn):
    """Minted credentials open an allocation; expired ones and a wrong secret are refused by coturn."""
    server_addr = ("127.0.0.1", coturn.port)

    async def allocate(username: str, password: str) -> None:
        transport, _ = await turn.create_turn_endpoint(
            asyncio.DatagramProtocol, server_addr=server_addr, username=username, password=password
        )
        transport.close()

    await asyncio.wait_for(allocate(*ice.turn_rest_credentials(coturn.secret, 600)), 10)
    expired = ice.turn_rest_credentials(coturn.secret, 600, now=time.time() - 3600)
    wrong = ice.turn_rest_credentials("not-the-secret", 600)
    for username, password in (expired, wrong):
        with pytest.raises(Exception, match="401|Unauthorized|Stale|438"):
            await asyncio.wait_for(allocate(username, password), 10)


async def test_wrong_turn_credentials_fail_clearly(start_server, coturn):
    """A relay-only client with refused credentials gathers nothing: no call, and the server stays healthy."""
    server = start_server("--ice-server", f"turn:nobody:wrong@127.0.0.1:{coturn.port}")
    body = await fetch_ice(server.base)
    assert body["iceServers"] == [{"urls": coturn.url, "username": "nobody", "credential": "wrong"}]
    client = RtcClient(server.base, rtc_config=relay_config(body))
    try:
        with pytest.raises((TimeoutError, asyncio.TimeoutError)):
            await client.connect(timeout=8)
        assert candidate_lines(client.pc.localDescription.sdp) == []
        assert client.pc.connectionState != "connected"
    finally:
        await client.close()
    assert server.health()["status"] == "ok"


def free_udp_ports(count: int) -> list[int]:
    ports: list[int] = []
    socks = []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return sorted(ports)


async def test_media_ports_range(start_server):
    ports = free_udp_ports(2)
    server = start_server("--media-ports", ",".join(map(str, ports)))
    clients = [RtcClient(server.base) for _ in range(3)]
    try:
        for client in clients[:2]:
            await client.connect()
            lines = candidate_lines(client.answer["sdp"])
            assert lines, "the answer carries candidates"
            assert {int(line.split()[5]) for line in lines} <= set(ports), lines
        await clients[1].wait_frames(5)  # a call on a fixed port works
        async with aiohttp.ClientSession() as http:  # the range is used up: a clear 503
            offer_pc = clients[2].pc
            offer_pc.addTrack(clients[2].video)
            await offer_pc.setLocalDescription(await offer_pc.createOffer())
            body = {"sdp": offer_pc.localDescription.sdp, "type": "offer"}
            async with http.post(server.base + "/api/offer", json=body) as resp:
                error = await resp.json()
                assert resp.status == 503 and error["error"]["code"] == "no_media_ports"
                assert resp.headers.get("Retry-After")
        health = server.health()
        assert health["status"] == "ok" and health["sessions"] == 2
        await clients[0].close()  # a port comes free: the next call gets it
        late = RtcClient(server.base)
        clients.append(late)
        for _ in range(50):
            if server.health()["sessions"] == 1:
                break
            await asyncio.sleep(0.1)
        await late.connect()
        await late.wait_frames(3)
    finally:
        for client in clients:
            await client.close()


async def test_h264_negotiated_by_aiortc(start_server):
    """`--video-codec h264` (auto picks by measured encode cost: tests/test_codec_choice.py)."""
    server = start_server("--video-codec", "h264")
    body = await fetch_ice(server.base)
    assert body["videoCodec"] == "h264"
    client = RtcClient(server.base, settings={"passthrough_effect": "invert"})
    try:
        await client.connect()
        await client.wait_frames(10)
        video = client.answer["sdp"].split("m=video", 1)[1].split("m=", 1)[0]
        first_pt = video.splitlines()[0].split()[2]  # " <port> <proto> <first payload type> ..."
        assert re.search(rf"a=rtpmap:{first_pt} H264/90000", video), video
        assert "VP8" not in video
    finally:
        await client.close()


async def test_vp8_when_asked(start_server):
    server = start_server("--video-codec", "vp8", "--max-bitrate", "400000")
    client = RtcClient(server.base)
    try:
        await client.connect()
        await client.wait_frames(5)
        video = client.answer["sdp"].split("m=video", 1)[1].split("m=", 1)[0]
        assert "VP8/90000" in video and "H264" not in video
    finally:
        await client.close()


async def test_resume_takes_over_the_lost_call(start_server):
    server = start_server("--resume-window", "60")
    first = RtcClient(server.base, settings={"prompt": "a lighthouse at dusk", "seed": 1234})
    second = None
    try:
        await first.connect()
        await first.wait_frames(3)
        # The phone changed networks: it rejoins with a new offer naming its session (the old one may still
        # look alive to the server), and asks for nothing else.
        second = RtcClient(server.base, offer_extra={"resume": first.session_id})
        await second.connect()
        assert second.answer["resumed"] is True and second.session_id == first.session_id
        settings = await second.request({"type": "settings", "settings": {}}, "settings")
        assert settings["settings"]["prompt"] == "a lighthouse at dusk" and settings["settings"]["seed"] == 1234
        await second.wait_frames(5)
        assert server.health()["sessions"] == 1  # the old call was closed, not leaked
        stranger = RtcClient(server.base, offer_extra={"resume": "no-such-session"})
        await stranger.connect()
        assert stranger.answer["resumed"] is False and stranger.session_id != first.session_id
        await stranger.close()
    finally:
        await first.close(hang_up=False)
        if second is not None:
            await second.close()


async def test_resume_after_the_connection_is_lost(start_server):
    """The old connection is gone (the server saw it close without a hang-up): the call is kept for the window."""
    server = start_server("--resume-window", "60")
    first = RtcClient(server.base, settings={"prompt": "a fox in the snow", "seed": 77})
    await first.connect()
    await first.wait_frames(3)
    await first.close(hang_up=False)  # the phone's connection went away; no DELETE
    for _ in range(100):
        if server.health()["sessions"] == 0:
            break
        await asyncio.sleep(0.1)
    assert server.health()["sessions"] == 0 and server.health()["peer_connections"] == 0
    second = RtcClient(server.base, offer_extra={"resume": first.session_id})
    try:
        await second.connect()
        assert second.answer["resumed"] is True and second.session_id == first.session_id
        settings = await second.request({"type": "settings", "settings": {}}, "settings")
        assert (settings["settings"]["prompt"], settings["settings"]["seed"]) == ("a fox in the snow", 77)
        await second.wait_frames(5)
    finally:
        await second.close()
    # A hang-up is final: nothing to resume.
    third = RtcClient(server.base, offer_extra={"resume": first.session_id})
    try:
        await third.connect()
        assert third.answer["resumed"] is False
    finally:
        await third.close()


async def test_relay_call_resumes_after_the_relay_restarts(start_server, coturn):
    """aiortc variant of the page's rejoin: coturn dies mid-call, comes back 5 s later, a resume offer works."""
    server = start_server("--turn-url", coturn.url, "--turn-secret", coturn.secret)
    first = RtcClient(server.base, rtc_config=relay_config(await fetch_ice(server.base)), settings={"seed": 99})
    second = None
    try:
        await first.connect(timeout=30)
        await first.wait_frames(5)
        coturn.stop()
        before = first.frames_received
        await asyncio.sleep(5)
        assert first.frames_received - before <= 3  # the relay is really gone: frames stopped
        coturn.start()
        second = RtcClient(
            server.base,
            rtc_config=relay_config(await fetch_ice(server.base)),
            offer_extra={"resume": first.session_id},
        )
        started = time.monotonic()
        await second.connect(timeout=30)
        await second.wait_frames(5, timeout=30)
        assert time.monotonic() - started < 10
        assert second.answer["resumed"] is True and second.session_id == first.session_id
        assert (await second.request({"type": "settings", "settings": {}}, "settings"))["settings"]["seed"] == 99
        assert selected_pair(second).local_candidate.type == "relay"
    finally:
        await first.close(hang_up=False)
        if second is not None:
            await second.close()


async def test_hang_up_is_prompt_when_the_relay_is_gone(start_server, coturn):
    """With coturn dead, aioice retries deleting the TURN allocation for ~31 s; a hang-up must not wait for it."""
    server = start_server("--turn-url", coturn.url, "--turn-secret", coturn.secret)
    client = RtcClient(server.base, rtc_config=relay_config(await fetch_ice(server.base)))
    try:
        await client.connect(timeout=30)
        await client.wait_frames(3)
        coturn.stop()
        started = time.monotonic()
        async with aiohttp.ClientSession() as http:
            async with http.delete(f"{server.base}/api/sessions/{client.session_id}") as resp:
                assert resp.status == 200
        assert time.monotonic() - started < 8.0
        assert server.health()["sessions"] == 0
    finally:
        for task in client._tasks:
            task.cancel()
        await ice.close_peer(client.pc)  # the client's own allocation is stuck the same way
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 8.0 and server.proc.returncode == 0
