"""Real calls (aiortc client → `speakdraw serve` subprocess) with the style engine.

The client's camera shows the astronaut photo; the expected frames are computed here with the same
engine and weights on the same photo, and received frames are compared per 16x16 cell (VP8 loss
averages out), as tests/test_diffusion_call.py does for diffusion.
- `--engine style`: frames come back repainted; a prompt change fades across frames (each frame a
  step further from the old style and closer to the new); an image prompt changes the frames and
  DELETE restores them.
- the default engine (`sd-turbo`) with no hub, no network and an empty `$SPEAKDRAW_HOME`: the server
  serves `style` within seconds, says why, and a call gets repainted frames.
"""

from __future__ import annotations

import io
import json
import time
import urllib.request

import aiohttp
import numpy as np
import pytest
from PIL import Image

from speakdraw.engines import EngineOptions, load_engine
from speakdraw.pipeline import fit_frame
from speakdraw.settings import Settings
from tests.rtc_client import RtcClient
from tests.serverproc import ServerProcess
from tests.test_diffusion_call import distance

SIZE = 256
SETTINGS = {"width": SIZE, "height": SIZE, "prompt": "a watercolor painting", "strength": 1.0, "prompt_fade_frames": 0}
FADE = 12
NEW_PROMPT = "a dragon made of fire"
CLOSE = 7.0  # per-cell mean distance that VP8 round trips stay under (measured 1-3 here)


def camera() -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((512, 512), Image.BILINEAR))


def style_picture() -> np.ndarray:
    from skimage import data

    return np.asarray(data.chelsea())


@pytest.fixture(scope="module")
def predictions() -> dict[str, np.ndarray]:
    engine, _ = load_engine(EngineOptions(engine="style", device="cpu"))
    sent = fit_frame(camera(), SIZE, SIZE)
    old = engine.new_session(Settings(**SETTINGS)).process(sent)
    new = engine.new_session(Settings(**{**SETTINGS, "prompt": NEW_PROMPT})).process(sent)
    session = engine.new_session(Settings(**SETTINGS))
    session.set_image_prompt(engine.encode_image_prompt(style_picture()))
    imaged = session.process(sent)
    assert min(distance(old, sent), distance(new, old), distance(imaged, old)) > 20
    return {"sent": sent, "old": old, "new": new, "imaged": imaged}


def _client(base: str, **settings) -> RtcClient:
    client = RtcClient(base, settings={**SETTINGS, **settings}, fps=15)
    client.video.image = camera()
    return client


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


async def test_style_call_repaints_fades_to_a_new_prompt_and_takes_image_prompts(start_server, predictions):
    server = start_server("--degradation", "maintain-resolution", engine="style")  # compared at SIZE
    client = _client(server.base)
    await client.connect()
    try:
        status = await client.expect("status", where=lambda m: m.get("engine") == "style")
        assert status["ready"] is True
        await client.wait_frames(8)
        got = client.frames[-1].image
        assert got.shape == (SIZE, SIZE, 3)
        assert distance(got, predictions["old"]) < CLOSE, distance(got, predictions["old"])
        assert distance(got, predictions["sent"]) > 20  # repainted, not the echoed camera

        # a prompt change fades over FADE frames: step by step away from the old style, towards the new
        client.send({"type": "settings", "settings": {"prompt_fade_frames": FADE}})
        await client.expect("settings")
        await client.wait_frames(3)
        start = client.frames_received
        reply = await client.request({"type": "prompt", "text": NEW_PROMPT}, "settings")
        assert reply["settings"]["prompt"] == NEW_PROMPT
        await client.wait_frames(FADE + 10)
        frames = client.frames[-(client.frames_received - start + 1) :]  # from the last frame before the change
        to_new = [distance(f.image, predictions["new"]) for f in frames]
        to_old = [distance(f.image, predictions["old"]) for f in frames]
        assert to_old[0] < CLOSE and to_new[-1] < CLOSE, (to_old, to_new)
        between = [i for i, (a, b) in enumerate(zip(to_old, to_new, strict=True)) if a > 3 * CLOSE and b > 3 * CLOSE]
        assert len(between) >= 3, (to_old, to_new)  # several frames are visibly between the two styles
        assert all(later <= earlier + 3.0 for earlier, later in zip(to_new, to_new[1:], strict=False)), to_new

        # an image prompt repaints in the picture's style; DELETE brings the prompt's style back
        url = f"{server.base}/api/sessions/{client.session_id}/image-prompt"
        client.send({"type": "prompt", "text": SETTINGS["prompt"]})
        client.send({"type": "settings", "settings": {"prompt_fade_frames": 0}})
        await client.wait_frames(10)
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=_png(style_picture()), headers=client.headers()) as resp:
                assert resp.status == 200, await resp.text()
            await client.wait_frames(10)
            got = client.frames[-1].image
            to_plain, to_imaged = distance(got, predictions["old"]), distance(got, predictions["imaged"])
            assert to_imaged < CLOSE and to_plain > 3 * to_imaged, (to_plain, to_imaged)
            async with http.delete(url, headers=client.headers()) as resp:
                assert resp.status == 200
            await client.wait_frames(10)
            got = client.frames[-1].image
            assert distance(got, predictions["old"]) < CLOSE, distance(got, predictions["old"])
    finally:
        await client.close()


async def test_default_engine_offline_with_an_empty_home_serves_style_and_says_why(tmp_path, predictions):
    env = {
        "HF_HUB_OFFLINE": "1",
        "SPEAKDRAW_OFFLINE": "1",
        "SPEAKDRAW_HOME": str(tmp_path / "empty-home"),
        "SPEAKDRAW_SD_TURBO_PATH": "",
        "HF_HOME": str(tmp_path / "empty-hf"),  # no Hugging Face cache either
    }
    started = time.monotonic()
    server = ServerProcess(engine="sd-turbo", log_path=tmp_path / "server.log", env=env)
    try:
        server.wait_ready(timeout=120)
        ready_s = time.monotonic() - started
        with urllib.request.urlopen(server.base + "/api/settings", timeout=5) as resp:
            info = json.loads(resp.read())["server"]
        assert info["engine"] == "style" and info["requested_engine"] == "sd-turbo"
        assert info["features"]["image_prompt"] is True and info["image_prompt_reason"] is None
        assert any("sd-turbo" in w and "serving style" in w for w in info["warnings"]), info["warnings"]
        assert "serving style" in server.log_text()
        # start-up is bounded by importing the diffusion stack to find its weights missing, not by a download
        assert ready_s < 90, ready_s
        client = _client(server.base)
        await client.connect()
        try:
            status = await client.expect("status", where=lambda m: m.get("ready"))
            assert status["engine"] == "style" and "sd-turbo" in status["message"]
            await client.wait_frames(8)
            got = client.frames[-1].image
            assert distance(got, predictions["old"]) < CLOSE and distance(got, predictions["sent"]) > 20
        finally:
            await client.close()
    finally:
        server.stop()
    print(f"sd-turbo → style fallback ready in {ready_s:.1f} s")
