"""`GET /metrics` (issue 6, point 2): parses with the Prometheus text parser, and its counters move as frames flow."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.config import ServerConfig
from server.metrics import METRICS
from tests.rtc_client import RtcClient

TOKEN = "metrics-test-token"


def parse(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} for every sample; the parser raises on malformed text."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def scrape(base: str) -> dict[tuple[str, tuple], float]:
    async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return parse(await resp.text())


def stage_count(m, stage: str) -> float:
    return m[("speakdraw_stage_latency_seconds_count", (("stage", stage),))]


def errors(m, code: str) -> float:
    return m.get(("speakdraw_errors_total", (("code", code),)), 0.0)


@pytest.fixture
def server(start_server):
    # A 50 ms model behind a 30 fps camera: frames must be dropped at the inbox, and counted.
    return start_server("--token", TOKEN, "--simulate-model-ms", "50")


async def test_metrics_parse_and_move_with_a_call(server):
    m0 = await scrape(server.base)  # no token: /metrics is outside /api
    assert m0[("speakdraw_active_sessions", ())] == 0
    assert m0[("speakdraw_frames_in_total", ())] == 0
    assert stage_count(m0, "total") == 0

    client = RtcClient(server.base, token=TOKEN, honour_send=False)  # a camera that keeps its 30 fps
    await client.connect()
    try:
        await client.wait_frames(20)
        m1 = await scrape(server.base)
        assert m1[("speakdraw_active_sessions", ())] == 1
        assert m1[("speakdraw_frames_in_total", ())] > 20
        assert m1[("speakdraw_frames_out_total", ())] >= 20
        assert m1[("speakdraw_frames_dropped_total", ())] > 0  # model slower than the camera
        for stage in ("diffuse", "encode", "total"):
            assert stage_count(m1, stage) > 0, stage
        assert stage_count(m1, "matte") == 0  # mode "full", no matting: the stage never ran
        # The simulated 50 ms model shows in the diffuse histogram: no frame was faster than 35 ms.
        assert m1[("speakdraw_stage_latency_seconds_bucket", (("le", "0.035"), ("stage", "diffuse")))] == 0
        total_sum = m1[("speakdraw_stage_latency_seconds_sum", (("stage", "total"),))]
        assert total_sum / stage_count(m1, "total") >= 0.05

        # Errors by code: a bad control message, a wrong token, an unknown session.
        await client.request("{nope", "error")
        async with aiohttp.ClientSession() as http:
            async with http.get(server.base + "/api/settings?token=wrong") as resp:
                assert resp.status == 401
            async with http.delete(server.base + f"/api/sessions/none?token={TOKEN}") as resp:
                assert resp.status == 404

        await asyncio.sleep(1.0)
        m2 = await scrape(server.base)
        for name in ("speakdraw_frames_in_total", "speakdraw_frames_out_total"):
            assert m2[(name, ())] > m1[(name, ())], name
        assert stage_count(m2, "total") > stage_count(m1, "total")
        assert errors(m2, "bad_json") == errors(m1, "bad_json") + 1
        assert errors(m2, "unauthorized") == errors(m1, "unauthorized") + 1
        assert errors(m2, "unknown_session") == errors(m1, "unknown_session") + 1
        stats = await client.expect("stats")
        assert abs(m2[("speakdraw_frames_out_total", ())] - stats["frames_out"]) < 40
    finally:
        await client.close()
    received = client.frames_received

    await asyncio.sleep(1.5)  # the close has settled
    m3 = await scrape(server.base)
    assert m3[("speakdraw_active_sessions", ())] == 0
    # Every frame the client decoded was counted as sent, and little more was sent than it got (loopback loses
    # nothing; the frames in flight at the hang-up, and the one aiortc's jitter buffer holds back, are the rest).
    sent = m3[("speakdraw_frames_out_total", ())]
    assert received <= sent <= received + 10, (received, sent)
    # The call's counting stopped with it: nothing of the closed call is still taking or sending frames.
    await asyncio.sleep(1.0)
    m4 = await scrape(server.base)
    for name in ("speakdraw_frames_in_total", "speakdraw_frames_out_total", "speakdraw_frames_dropped_total"):
        assert m4[(name, ())] == m3[(name, ())], name


def test_each_app_has_its_own_registry():
    a = create_app(ServerConfig(https_port=0), load_models=False)
    b = create_app(ServerConfig(https_port=0), load_models=False)
    a[METRICS].frame_in(dropped=True)
    a[METRICS].message_sent({"type": "transcript", "utterance": 1, "text": "hi", "final": True})
    a[METRICS].message_sent({"type": "transcript", "utterance": 2, "text": "h", "final": False})
    a[METRICS].message_sent({"type": "error", "code": "too_large", "message": "x"})
    ma, mb = parse(a[METRICS].render().decode()), parse(b[METRICS].render().decode())
    assert ma[("speakdraw_frames_in_total", ())] == 1 and ma[("speakdraw_frames_dropped_total", ())] == 1
    assert ma[("speakdraw_transcripts_total", ())] == 1  # finals only
    assert errors(ma, "too_large") == 1
    assert mb[("speakdraw_frames_in_total", ())] == 0 and mb[("speakdraw_transcripts_total", ())] == 0
