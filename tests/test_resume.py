"""Rejoin (`"resume": "<session_id>"` in the offer) through real calls, and the offer path's clean-up (issue 20).

Each real-call test ends by checking that `/healthz` `peer_connections` and `sessions` are back at their
baseline: a rejoin leaves no peer connection behind, whatever it took over. The in-process tests break
the offer path after the call's peer connection exists and check that it is closed and its slot freed.
"""

from __future__ import annotations

import asyncio
import io
import time

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from server import negotiation, resume
from server.app import create_app
from server.config import ServerConfig
from server.session import Session
from server.state import STATE
from tests.rtc_client import RtcClient
from tests.speechdata import SENTENCES, PcmAudioTrack, have_espeak, speech_track
from tests.test_diffusion_call import SETTINGS, distance
from tests.test_image_prompt_call import picture, predict


async def settle(server, baseline: dict, timeout: float = 15.0) -> dict:
    """/healthz once sessions and peer connections are back at `baseline` (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        health = await asyncio.to_thread(server.health)
        back = health["sessions"] == baseline["sessions"] and health["peer_connections"] == baseline["peer_connections"]
        if back or time.monotonic() > deadline:
            return health
        await asyncio.sleep(0.2)


def assert_back(health: dict, baseline: dict) -> None:
    assert health["peer_connections"] == baseline["peer_connections"], (baseline, health)
    assert health["sessions"] == baseline["sessions"], (baseline, health)


async def lose(client: RtcClient, server) -> None:
    """The phone's connection goes away (no DELETE); wait until the server has seen it."""
    await client.close(hang_up=False)
    for _ in range(150):
        if server.health()["sessions"] == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the server did not notice the lost call")


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def predictions() -> dict[str, np.ndarray]:
    return predict("tiny-sd15", SETTINGS)


async def test_rejoin_with_an_image_prompt(start_server, predictions):
    """Before issue 20 this rejoin got HTTP 500 and left a peer connection open after every call ended."""
    server = start_server("--model", "tiny-sd15", "--resume-window", "60", "--min-fps", "1", engine="tiny")
    baseline = server.health()
    first = RtcClient(server.base, settings=SETTINGS, fps=15)
    await first.connect()
    url = f"{server.base}/api/sessions/{first.session_id}/image-prompt"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=png(picture())) as resp:
            assert resp.status == 200, await resp.text()
        await first.wait_frames(10)
        await lose(first, server)
        second = RtcClient(server.base, settings={"prompt": "ignored: the lost call's settings win"}, fps=15)
        second.offer_extra = {"resume": first.session_id}
        try:
            await second.connect()
            assert second.answer["resumed"] is True and second.session_id == first.session_id
            async with http.get(url) as resp:
                assert (await resp.json())["image_prompt"] is True
            await second.wait_frames(10)
            got = second.frames[-1].image
            to_plain, to_imaged = distance(got, predictions["plain"]), distance(got, predictions["imaged"])
            assert to_imaged < 7.0 and to_plain > 1.5 * to_imaged, (to_plain, to_imaged)  # the image prompt is in use
        finally:
            await second.close()
    assert_back(await settle(server, baseline), baseline)


async def test_rejoin_of_a_call_still_alive(start_server):
    server = start_server("--resume-window", "60")
    baseline = server.health()
    first = RtcClient(server.base, settings={"prompt": "a lighthouse at dusk", "seed": 1234})
    second = None
    try:
        await first.connect()
        await first.wait_frames(3)
        second = RtcClient(server.base, offer_extra={"resume": first.session_id})  # the old path still looks alive
        await second.connect()
        assert second.answer["resumed"] is True and second.session_id == first.session_id
        settings = (await second.request({"type": "settings", "settings": {}}, "settings"))["settings"]
        assert (settings["prompt"], settings["seed"]) == ("a lighthouse at dusk", 1234)
        await second.wait_frames(5)
        health = server.health()
        assert health["sessions"] == 1 and health["peer_connections"] == baseline["peer_connections"] + 1, health
    finally:
        await first.close(hang_up=False)
        if second is not None:
            await second.close()
    assert_back(await settle(server, baseline), baseline)


async def test_rejoin_after_the_resume_window(start_server):
    server = start_server("--resume-window", "1")
    baseline = server.health()
    first = RtcClient(server.base, settings={"prompt": "a fox in the snow", "seed": 77})
    await first.connect()
    await first.wait_frames(3)
    await lose(first, server)
    await asyncio.sleep(1.5)  # past the window
    second = RtcClient(server.base, offer_extra={"resume": first.session_id})
    try:
        await second.connect()
        assert second.answer["resumed"] is False and second.session_id != first.session_id
        settings = (await second.request({"type": "settings", "settings": {}}, "settings"))["settings"]
        assert settings["seed"] != 77 and settings["prompt"] != "a fox in the snow"  # a new call, from defaults
        await second.wait_frames(3)
    finally:
        await second.close()
    assert_back(await settle(server, baseline), baseline)


async def _finals(client: RtcClient, count: int, timeout: float) -> list[dict]:
    finals: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(finals) < count and time.monotonic() < deadline:
        message = await client.expect("transcript", timeout=max(0.1, deadline - time.monotonic()))
        if message["final"] and message["text"].strip():
            finals.append(message)
    return finals


@pytest.mark.slow
@pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")
async def test_rejoin_with_speech_continues_the_utterance_numbers(start_server):
    server = start_server("--resume-window", "60", stt="faster-whisper")
    baseline = server.health()
    audio, _ = speech_track([(SENTENCES[0], "en-us"), (SENTENCES[2], "en-us")], gap_s=1.2, lead_s=0.5, rate=48000)
    first = RtcClient(server.base, audio=PcmAudioTrack(audio), settings={"width": 256, "height": 256})
    await first.connect()
    spoken = await _finals(first, 2, len(audio) / 48000 + 20)
    assert [m["utterance"] for m in spoken] == [0, 1], spoken
    await lose(first, server)
    again, _ = speech_track([(SENTENCES[3], "en-us")], gap_s=1.2, lead_s=0.5, rate=48000)
    second = RtcClient(server.base, audio=PcmAudioTrack(again), offer_extra={"resume": first.session_id})
    try:
        await second.connect()
        assert second.answer["resumed"] is True
        finals = await _finals(second, 1, len(again) / 48000 + 20)
        assert finals and finals[0]["utterance"] == 2, finals  # numbers go on: the page's transcript keeps its lines
    finally:
        await second.close()
    assert_back(await settle(server, baseline), baseline)


# ---- the offer path: a failure after the peer connection exists ---------------------------------------------
async def _offer_sdp() -> tuple[str, object]:
    from aiortc import RTCConfiguration, RTCPeerConnection

    from tests.rtc_client import PatternVideoTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(PatternVideoTrack(15))
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp, pc


@pytest.fixture
async def app_client():
    app = create_app(ServerConfig(https_port=0, stt="off", matting="off", resume_window_s=60), load_models=False)
    async with TestClient(TestServer(app)) as client:
        yield client, app[STATE]


@pytest.mark.parametrize("where", ["resume.apply", "Session.accept"])
async def test_a_failure_after_the_peer_connection_exists_closes_it_and_frees_the_slot(app_client, monkeypatch, where):
    client, state = app_client
    sdp, caller = await _offer_sdp()
    lost_id = "a-lost-call"
    state.resume_store._lost[lost_id] = resume.LostCall(lost_id, {"seed": 5}, None, None, 3, time.monotonic())
    made: list[Session] = []
    real_init = Session.__init__

    def spy_init(self, *args, **kwargs) -> None:
        real_init(self, *args, **kwargs)
        made.append(self)

    def boom(*args, **kwargs):
        raise RuntimeError("a bug after the peer connection exists")

    monkeypatch.setattr(Session, "__init__", spy_init)
    if where == "resume.apply":
        monkeypatch.setattr(resume, "apply", boom)
    else:
        monkeypatch.setattr(Session, "accept", lambda self, sdp: boom())
    before = negotiation.live_peer_connections()
    try:
        resp = await client.post("/api/offer", json={"sdp": sdp, "type": "offer", "resume": lost_id})
        assert resp.status == 500
        assert len(made) == 1 and made[0].pc.connectionState == "closed" and made[0].closed.is_set()
        assert negotiation.live_peer_connections() == before
        assert state.sessions == {} and state.reserved == 0
        assert state.resume_store.take(lost_id) is not None  # the failed rejoin lost nothing
    finally:
        await caller.close()


async def test_a_bad_offer_after_the_peer_connection_exists_is_a_400_and_leaves_nothing(app_client):
    client, state = app_client
    sdp, caller = await _offer_sdp()
    await caller.close()
    audio_only = sdp.split("m=video")[0]  # no video track to transform
    before = negotiation.live_peer_connections()
    resp = await client.post("/api/offer", json={"sdp": audio_only, "type": "offer"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_sdp"
    assert negotiation.live_peer_connections() == before and state.sessions == {} and state.reserved == 0
