"""Speech in the real call page: headless Chromium's fake microphone plays espeak-ng speech,
the server (`--stt faster-whisper`, tiny.en) transcribes it, and the page shows the final
line and makes it the active prompt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.browser import launch_chromium, require_chromium
from tests.speechdata import SENTENCES, espeak, have_espeak, silence, wer, write_wav

pytestmark = [pytest.mark.browser, pytest.mark.slow]

sync_api = require_chromium()
if not have_espeak():  # pragma: no cover
    pytest.skip("espeak-ng not installed", allow_module_level=True)

SPOKEN = [(SENTENCES[0], "en-us"), (SENTENCES[2], "en+f3"), (SENTENCES[4], "en-gb-x-rp")]


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory) -> Path:
    """Chromium loops the file: speech, then enough silence for the end-of-speech rule."""
    rate = 48000
    parts = [silence(1.0, rate)]
    for text, voice in SPOKEN:
        parts += [espeak(text, voice, rate=rate), silence(1.5, rate)]
    audio = np.concatenate([*parts, silence(1.0, rate)])
    return write_wav(tmp_path_factory.mktemp("mic") / "speech.wav", audio, rate)


def test_page_shows_spoken_final_and_makes_it_the_prompt(start_server, mic_wav, artifacts_dir):
    server = start_server(stt="faster-whisper")
    with sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw, audio=mic_wav)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda msg: print(f"[browser {msg.type}] {msg.text}"))
            page.goto(server.base + "/")
            page.wait_for_selector("#start:not([disabled])", timeout=15_000)
            page.click("#start")
            page.wait_for_function(
                "(n) => document.querySelectorAll('#transcript p.final').length >= n", arg=len(SPOKEN), timeout=60_000
            )
            finals = page.locator("#transcript p.final").all_inner_texts()[: len(SPOKEN)]
            print("browser finals:", finals)
            assert wer([text for text, _ in SPOKEN], finals) <= 0.2
            # the active prompt follows the newest final (the settings reply comes right after it)
            page.wait_for_function(
                "() => { const f = [...document.querySelectorAll('#transcript p.final')].pop();"
                " return f && document.getElementById('active-prompt').textContent.trim() === f.textContent.trim()"
                " && window.speakdraw.state.current.prompt === f.textContent.trim(); }",  # confirmed by the server
                timeout=5_000,
            )
            page.screenshot(path=str(artifacts_dir / "browser-speech.png"), full_page=True)
            page.click("#stop")
        finally:
            browser.close()
