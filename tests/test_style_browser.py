"""The call page on a fresh offline machine: the default engine falls back to `style`, and a spoken prompt
changes the style with a fade.

Headless Chromium's fake camera shows the astronaut photo (still), its fake microphone plays espeak-ng
saying "A dragon made of fire." The server runs the default `--engine sd-turbo` with no hub, no network
and an empty `$SPEAKDRAW_HOME` (Whisper tiny.en is pointed at explicitly), so it serves `style` and says
why on the page. The prompt starts as "a watercolor painting" (style 14, pale blue); the spoken final
picks style 20 (fire, red and black). Polled snapshots of the session's output show the mean red − blue
rising step by step over the fade, from the watercolour's value to the fire's: a signal that does not
depend on how Chromium scales the camera.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from speakdraw import weights
from tests.browser import launch_chromium, require_chromium
from tests.speechdata import espeak, have_espeak, silence, write_wav

pytestmark = [pytest.mark.browser, pytest.mark.slow]

sync_api = require_chromium()
if not have_espeak():  # pragma: no cover
    pytest.skip("espeak-ng not installed", allow_module_level=True)

SPOKEN = "A dragon made of fire."


def red_minus_blue(rgb: np.ndarray) -> float:
    return float(rgb[..., 0].astype(np.float32).mean() - rgb[..., 2].astype(np.float32).mean())


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> tuple[Path, Path]:
    from skimage import data

    folder = tmp_path_factory.mktemp("style-media")
    png = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(png)
    video = folder / "camera.y4m"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-loop", "1", "-i", str(png), "-t", "1",
         "-r", "15", "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", str(video)],
        check=True,
    )  # fmt: skip
    rate = 48000
    audio = np.concatenate([silence(3.0, rate), espeak(SPOKEN, "en-us", rate=rate), silence(6.0, rate)])
    return video, write_wav(folder / "speech.wav", audio, rate)


def _snapshot(base: str, session_id: str) -> np.ndarray:
    with urllib.request.urlopen(f"{base}/api/sessions/{session_id}/snapshot.jpg", timeout=5) as resp:
        return np.asarray(Image.open(BytesIO(resp.read())).convert("RGB"))


def test_offline_page_serves_style_and_a_spoken_prompt_fades_to_its_style(media, tmp_path, artifacts_dir):
    from tests.serverproc import ServerProcess

    whisper = weights.path("faster-whisper-tiny.en")
    assert whisper is not None, "faster-whisper tiny.en is needed: speakdraw models pull faster-whisper-tiny.en"
    env = {
        "HF_HUB_OFFLINE": "1",
        "SPEAKDRAW_OFFLINE": "1",
        "SPEAKDRAW_HOME": str(tmp_path / "empty-home"),
        "HF_HOME": str(tmp_path / "empty-hf"),
        "SPEAKDRAW_SD_TURBO_PATH": "",
        "SPEAKDRAW_WHISPER_PATH": str(whisper),
    }
    server = ServerProcess(engine="sd-turbo", stt="faster-whisper", log_path=tmp_path / "server.log", env=env)
    video, wav = media
    try:
        server.wait_ready(timeout=120)
        with sync_api.sync_playwright() as pw:
            browser = launch_chromium(pw, video=video, audio=wav)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(server.base + "/")
                page.wait_for_selector("#start:not([disabled])", timeout=15_000)
                # the warning once, in plain words; the server's own text behind a tap (<details>)
                warnings = page.locator("#warnings").inner_text()
                assert "Running the offline style painter" in warnings, warnings
                detail = page.locator("#warnings .detail").text_content()
                assert "sd-turbo" in detail and "serving style" in detail, detail
                page.click("#start")
                page.wait_for_function("() => window.speakdraw.state.call && window.speakdraw.state.call.sessionId")
                session_id = page.evaluate("() => window.speakdraw.state.call.sessionId")
                samples: list[tuple[float, float, str]] = []  # (time, red − blue, active prompt)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    prompt = page.evaluate("() => window.speakdraw.state.current.prompt")
                    samples.append((time.monotonic(), red_minus_blue(_snapshot(server.base, session_id)), prompt))
                    fire = [rb for _, rb, p in samples if "fire" in p.lower()]
                    # the fade is over when the picture has not changed for 3 s (frames come ~1-2 fps at 512²)
                    if len(fire) > 40 and len({round(v, 1) for v in fire[-30:]}) == 1:
                        break
                    page.wait_for_timeout(100)
                page.screenshot(path=str(artifacts_dir / "browser-style-fallback.png"), full_page=True)
                page.click("#stop")
            finally:
                browser.close()
    finally:
        server.stop()

    before = [rb for _, rb, prompt in samples if "fire" not in prompt.lower()]
    after = [rb for _, rb, prompt in samples if "fire" in prompt.lower()]
    print("red-blue before:", [round(v, 1) for v in before[-5:]], "after:", [round(v, 1) for v in after])
    assert len(before) >= 5 and after, "the spoken prompt never arrived"
    assert max(before[-5:]) < 10  # watercolour: blue outweighs red
    assert after[-1] > 45  # fire: red outweighs blue by far
    rising = [v for v in after if before[-1] + 5 < v < after[-1] - 5]
    assert len(set(round(v) for v in rising)) >= 2, after  # frames between the two styles: a fade, not a jump
    assert all(b >= a - 4.0 for a, b in zip(after, after[1:], strict=False)), after  # it only moves one way
