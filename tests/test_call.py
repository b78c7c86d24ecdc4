"""A real call over loopback: aiortc client → server → pipeline → back, and the control channel."""

from __future__ import annotations

import numpy as np
import pytest

from tests.rtc_client import QUADRANT_COLOURS, RtcClient, quadrant_means, read_frame_id


@pytest.fixture
def server(start_server):
    return start_server("--degradation", "maintain-resolution")  # frames are compared at 512 px


async def test_returned_frames_are_the_processed_input(server):
    client = RtcClient(server.base, settings={"passthrough_effect": "invert"})
    await client.connect()
    try:
        await client.wait_frames(20)
        img = client.frames[-1].image
        assert img.shape == (512, 512, 3)
        means = quadrant_means(img)
        inverted = 255 - QUADRANT_COLOURS.astype(float)
        # processed = inverted colours, far from an echo of the input
        assert np.abs(means - inverted).max() < 30, means
        assert np.abs(means - QUADRANT_COLOURS).min() > 60, means
        # the id blocks come back inverted too, and match frames that were sent
        ids = [read_frame_id(f.image, inverted=True) for f in client.frames[-10:]]
        assert all(i in client.video.sent_at for i in ids), ids
        assert ids == sorted(ids) and len(set(ids)) > 5, ids

        # switching the effect off live: frames come back as sent
        reply = await client.request({"type": "settings", "settings": {"passthrough_effect": "none"}}, "settings")
        assert reply["settings"]["passthrough_effect"] == "none"
        await client.wait_frames(15)
        means = quadrant_means(client.frames[-1].image)
        assert np.abs(means - QUADRANT_COLOURS).max() < 30, means
    finally:
        await client.close()


async def test_control_channel_protocol(server):
    client = RtcClient(server.base)
    await client.connect()
    try:
        status = await client.expect("status")
        assert status["engine"] == "passthrough" and status["ready"] is True

        pong = await client.request({"type": "ping", "t": 1234.5}, "pong")
        assert pong["t"] == 1234.5 and pong["server_time"] > 0

        reply = await client.request({"type": "settings", "settings": {"strength": 0.8, "seed": 7}}, "settings")
        assert reply["settings"]["strength"] == 0.8 and reply["settings"]["seed"] == 7

        reply = await client.request({"type": "prompt", "text": "a watercolor dragon"}, "settings")
        assert reply["settings"]["prompt"] == "a watercolor dragon"

        for bad, code in [
            ("{not json", "bad_json"),
            (json_dumps({"type": "dance"}), "unknown_type"),
            (json_dumps([1, 2]), "bad_message"),
            (json_dumps({"type": "settings", "settings": {"strength": 1.5}}), "invalid_settings"),
            (json_dumps({"type": "settings", "settings": {"width": 500}}), "invalid_settings"),
            (json_dumps({"type": "settings", "settings": {"no_such_field": 1}}), "invalid_settings"),
            (json_dumps({"type": "settings", "settings": "strong"}), "invalid_settings"),
            (json_dumps({"type": "prompt", "text": "x" * 70000}), "too_large"),
        ]:
            err = await client.request(bad, "error")
            assert err["code"] == code, (bad[:40], err)
            assert err["message"]

        # refused values changed nothing
        reply = await client.request({"type": "settings", "settings": {}}, "settings")
        assert reply["settings"]["strength"] == 0.8 and reply["settings"]["width"] == 512

        stats = await client.expect("stats", timeout=5)
        assert stats["fps_in"] > 0 and stats["fps_out"] > 0
        assert {"matte", "diffuse", "total"} <= set(stats["latency_ms"])
    finally:
        await client.close()


def json_dumps(value) -> str:
    import json

    return json.dumps(value)
