"""A real call with `--matting rvm`: `mode` switched to `human` over the data channel.

The client's camera sends scikit-image's astronaut photo; the passthrough engine's
`invert` effect stands in for diffusion. In `full` mode the whole frame comes back
inverted; in `human` mode only the person does and the wall behind her comes back as
sent. Regions are the hand-checked ones of tests/test_matting.py; the video goes
through VP8 both ways, so they are compared by mean colour with a margin.
"""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
from skimage import data

from tests.rtc_client import PatternVideoTrack, RtcClient

WALL = (slice(20, 200), slice(320, 370))
FACE = (slice(80, 140), slice(195, 245))
SUIT = (slice(300, 440), slice(60, 200))


def _mean(img: np.ndarray, region) -> np.ndarray:
    return img[region].reshape(-1, 3).astype(float).mean(axis=0)


def _looks_like(img: np.ndarray, ref: np.ndarray, region, margin: float = 25.0) -> bool:
    return float(np.abs(_mean(img, region) - _mean(ref, region)).max()) < margin


@pytest.fixture
def server(start_server):
    return start_server("--degradation", "maintain-resolution", matting="rvm")  # compared at the photo's size


async def test_human_mode_over_the_data_channel_composites_the_person(server):
    with urllib.request.urlopen(server.base + "/api/settings", timeout=5) as resp:
        info = json.loads(resp.read())["server"]
    assert info["matting"] == "rvm" and info["features"]["matting"] is True, info

    photo = data.astronaut()
    inverted = 255 - photo
    # the regions really differ once inverted, so the checks below can tell them apart
    for region in (WALL, FACE, SUIT):
        assert np.abs(_mean(photo, region) - _mean(inverted, region)).max() > 80

    client = RtcClient(server.base, settings={"passthrough_effect": "invert", "mode": "full"})
    client.video = PatternVideoTrack(fps=15.0, image=photo)  # a camera that keeps showing the photo
    await client.connect()
    try:
        await client.wait_frames(10)
        img = client.frames[-1].image
        assert img.shape == photo.shape
        assert _looks_like(img, inverted, WALL) and _looks_like(img, inverted, FACE), "full mode repaints everything"

        reply = await client.request({"type": "settings", "settings": {"mode": "human"}}, "settings")
        assert reply["settings"]["mode"] == "human"
        await client.wait_frames(20)
        img = client.frames[-1].image
        assert _looks_like(img, photo, WALL), f"background should be the camera's: {_mean(img, WALL)}"
        assert _looks_like(img, inverted, FACE), f"the person should be repainted: {_mean(img, FACE)}"
        assert _looks_like(img, inverted, SUIT), f"the person should be repainted: {_mean(img, SUIT)}"
        stats = await client.expect("stats", timeout=5, where=lambda m: m["latency_ms"]["matte"] > 0)
        assert stats["latency_ms"]["matte"] < 5000

        reply = await client.request({"type": "settings", "settings": {"mode": "full"}}, "settings")
        assert reply["settings"]["mode"] == "full"
        await client.wait_frames(15)
        img = client.frames[-1].image
        assert _looks_like(img, inverted, WALL), "back in full mode the background is repainted again"
        stats = await client.expect("stats", timeout=5, where=lambda m: m["latency_ms"]["matte"] == 0)
    finally:
        await client.close()
