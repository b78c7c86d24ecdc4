"""Real calls (aiortc clients) on `--engine tiny --model tiny-sdxl` (issue 13, point 2).

Frames come back repainted by the SDXL-shaped tiny engine; an image prompt posted to one call changes
that call's frames to what the engine predicts with the image, DELETE restores the plain prediction,
and a second call on the same server keeps its plain frames all along (isolated). Predictions are
computed here with the same seeded tiny SDXL model and adapter (steps=1: a frame depends only on its
input) and compared per 16x16 cell, as tests/test_image_prompt_call.py does for SD 1.5.
"""

from __future__ import annotations

import io
import json
import urllib.request

import aiohttp
import numpy as np
import pytest
from PIL import Image

from tests.rtc_client import RtcClient
from tests.test_diffusion_call import SETTINGS, distance
from tests.test_image_prompt_call import picture, predict

CALL_SETTINGS = {**SETTINGS, "ip_adapter_scale": 2.0}


@pytest.fixture(scope="module")
def predictions() -> dict[str, np.ndarray]:
    predicted = predict("tiny-sdxl", CALL_SETTINGS)
    plain, imaged, sent = predicted["plain"], predicted["imaged"], predicted["sent"]
    assert distance(plain, imaged) > 10  # the image prompt is plainly visible in the prediction
    assert distance(plain, sent) > 10  # and the frame is repainted at all
    return predicted


def closer(got: np.ndarray, near: np.ndarray, far: np.ndarray) -> tuple[float, float]:
    a, b = distance(got, near), distance(got, far)
    assert a < 10.0 and b > 1.5 * a, (a, b)  # (VP8 loss on the noise-like tiny output: a few levels per cell)
    return a, b


async def test_tiny_sdxl_call_image_prompt_changes_and_clears_and_calls_stay_isolated(start_server, predictions):
    server = start_server("--model", "tiny-sdxl", "--degradation", "maintain-resolution", engine="tiny")
    with urllib.request.urlopen(server.base + "/api/settings", timeout=5) as resp:
        info = json.loads(resp.read())["server"]
    assert info["features"]["image_prompt"] is True and "tiny-sdxl" in info["model"]
    a = RtcClient(server.base, settings=CALL_SETTINGS, fps=10)
    b = RtcClient(server.base, settings=CALL_SETTINGS, fps=10)
    await a.connect()
    await b.connect()
    url = f"{server.base}/api/sessions/{a.session_id}/image-prompt"
    png = io.BytesIO()
    Image.fromarray(picture()).save(png, format="PNG")
    plain, imaged, sent = predictions["plain"], predictions["imaged"], predictions["sent"]
    try:
        await a.wait_frames(8)
        await b.wait_frames(8)
        closer(a.frames[-1].image, plain, imaged)
        closer(a.frames[-1].image, plain, sent)  # repainted, not echoed
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=png.getvalue(), headers=a.headers()) as resp:
                assert resp.status == 200, await resp.text()
            await a.wait_frames(8)  # frames already in flight were made without it
            await b.wait_frames(8)
            closer(a.frames[-1].image, imaged, plain)
            closer(b.frames[-1].image, plain, imaged)  # the other call never sees A's image
            async with http.delete(url, headers=a.headers()) as resp:
                assert resp.status == 200
            await a.wait_frames(8)
            closer(a.frames[-1].image, plain, imaged)
    finally:
        await a.close()
        await b.close()


async def test_sdxl_turbo_without_weights_falls_back_and_says_why(start_server, tmp_path):
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "SPEAKDRAW_HOME": str(tmp_path / "home"),
        "SPEAKDRAW_SDXL_TURBO_PATH": "",
    }
    server = start_server(engine="sdxl-turbo", env=env)
    with urllib.request.urlopen(server.base + "/api/settings", timeout=5) as resp:
        info = json.loads(resp.read())["server"]
    assert info["engine"] != "sdxl-turbo"
    assert any("sdxl-turbo" in w and "offline" in w for w in info["warnings"]), info["warnings"]
    client = RtcClient(server.base)
    await client.connect()
    try:
        status = await client.expect("status")
        assert status["engine"] == info["engine"] and "sdxl-turbo" in status["message"]
        await client.wait_frames(5)
    finally:
        await client.close()
