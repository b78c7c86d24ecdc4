"""A real call with `--engine tiny --model tiny-sd15`: an image prompt posted to the session changes the frames
that come back to what the engine predicts with that image, and DELETE brings back the plain prediction.

Predictions are computed here with the same seeded tiny model, adapter and image encoder (steps=1, so a
frame depends only on its input); the received video is compared to them per 16x16 cell (VP8 loss averages
out), as tests/test_diffusion_call.py does for prompts.
"""

from __future__ import annotations

import io

import aiohttp
import numpy as np
import pytest
import torch
from PIL import Image

from speakdraw.diffusion import load_diffusion_engine
from speakdraw.engines import EngineOptions
from speakdraw.settings import Settings
from tests.rtc_client import RtcClient, pattern_frame
from tests.test_diffusion_call import SETTINGS, SIZE, distance


def picture() -> np.ndarray:
    blocks = np.random.default_rng(1).integers(0, 256, (10, 13, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((10, 10, 1), np.uint8))[:90, :120]


def predict(model: str, settings: dict) -> dict[str, np.ndarray]:
    """What the seeded tiny `model` makes of the test pattern, without and with `picture()` as image prompt."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engine = load_diffusion_engine(EngineOptions(engine="tiny", model=model, device="cpu"))
        sent = pattern_frame(0, SIZE, SIZE)
        plain = engine.new_session(Settings(**settings)).process(sent)
        session = engine.new_session(Settings(**settings))
        session.set_image_prompt(engine.encode_image_prompt(picture()))
        imaged = session.process(sent)
    finally:
        torch.set_num_threads(threads)
    return {"sent": sent, "plain": plain, "imaged": imaged}


@pytest.fixture(scope="module")
def predictions() -> dict[str, np.ndarray]:
    predicted = predict("tiny-sd15", SETTINGS)
    assert distance(predicted["plain"], predicted["imaged"]) > 10  # the image prompt is plainly visible
    return predicted


async def test_posted_image_prompt_changes_the_call_and_delete_restores_it(start_server, predictions):
    server = start_server("--model", "tiny-sd15", "--degradation", "maintain-resolution", engine="tiny")
    client = RtcClient(server.base, settings=SETTINGS, fps=15)
    await client.connect()
    url = f"{server.base}/api/sessions/{client.session_id}/image-prompt"
    png = io.BytesIO()
    Image.fromarray(picture()).save(png, format="PNG")
    try:
        await client.wait_frames(10)
        got = client.frames[-1].image
        to_plain, to_imaged = distance(got, predictions["plain"]), distance(got, predictions["imaged"])
        assert to_plain < 7.0 and to_imaged > 1.5 * to_plain, (to_plain, to_imaged)

        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=png.getvalue(), headers=client.headers()) as resp:
                assert resp.status == 200, await resp.text()
            await client.wait_frames(10)  # frames already in flight were made without it
            got = client.frames[-1].image
            to_plain, to_imaged = distance(got, predictions["plain"]), distance(got, predictions["imaged"])
            assert to_imaged < 7.0 and to_plain > 1.5 * to_imaged, (to_plain, to_imaged)

            async with http.delete(url, headers=client.headers()) as resp:
                assert resp.status == 200
            await client.wait_frames(10)
            got = client.frames[-1].image
            to_plain, to_imaged = distance(got, predictions["plain"]), distance(got, predictions["imaged"])
            assert to_plain < 7.0 and to_imaged > 1.5 * to_plain, (to_plain, to_imaged)
    finally:
        await client.close()
