"""Keep the clip (issue 23, point 4): the page records the painted video it receives (MediaRecorder), in
headless Chromium on a phone viewport, and the downloaded file plays: ffprobe decodes it and reads its
duration. The server does nothing for it (the recorder takes the stream the page already has).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.browser import IPHONE_13, PLAYING_JS, open_call_page, require_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]
require_chromium()


def _probe(path: Path) -> dict:
    """ffprobe's view of a clip: container duration, and the video frames it decodes (-count_frames)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v",
         "-show_entries", "format=format_name,duration:stream=codec_type,codec_name,width,height,nb_read_frames",
         "-of", "json", str(path)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    return json.loads(out)


def _save_clip(page, folder: Path) -> Path:
    page.wait_for_selector("#record-download:not([hidden])", timeout=10_000)
    with page.expect_download(timeout=10_000) as info:
        page.click("#record-download")
    download = info.value
    path = folder / download.suggested_filename
    download.save_as(path)
    return path


def test_a_recorded_clip_downloads_and_plays(camera_chromium, start_server, tmp_path, artifacts_dir):
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe is not installed")
    server = start_server()
    context, page = open_call_page(camera_chromium, server.base + "/", accept_downloads=True, **IPHONE_13)
    try:
        assert page.locator("#record").is_disabled()  # nothing to record before the call
        page.click("#start")
        page.wait_for_function(PLAYING_JS, timeout=30_000)
        page.wait_for_selector("#record:not([disabled])", timeout=5_000)

        page.click("#record")
        assert page.locator("#rec-timer").is_visible()
        assert page.inner_text("#record-label") == "Stop rec"
        page.wait_for_function("() => window.speakdraw.recorder.elapsedMs >= 3500", timeout=15_000)
        assert page.inner_text("#rec-time") == "0:03"  # the timer on the stage counts
        page.screenshot(path=str(artifacts_dir / "recording-phone.png"))
        page.click("#record")
        assert page.locator("#rec-timer").is_hidden()
        path = _save_clip(page, tmp_path)
        clip = page.evaluate("window.speakdraw.recorder.clip")
        print("clip:", clip, path.stat().st_size, "bytes")
        assert path.suffix in (".mp4", ".webm") and path.stat().st_size == clip["bytes"]

        probe = _probe(path)
        print("ffprobe:", probe)
        [stream] = probe["streams"]
        assert stream["codec_type"] == "video" and stream["width"] == 512 and stream["height"] == 512
        assert int(stream["nb_read_frames"]) >= 15, stream  # frames in it, decoded (the camera sends 15 fps)
        assert float(probe["format"]["duration"]) >= 3.0, probe

        # A call that ends while recording keeps what was recorded.
        page.click("#record")
        page.wait_for_function("() => window.speakdraw.recorder.elapsedMs >= 1500", timeout=10_000)
        page.click("#stop")
        page.wait_for_selector("#start:not([disabled])", timeout=10_000)
        page.wait_for_function("() => window.speakdraw.recorder.clip && window.speakdraw.recorder.clip.ms < 3000")
        (tmp_path / "after-hang-up").mkdir()
        second = _save_clip(page, tmp_path / "after-hang-up")
        assert float(_probe(second)["format"]["duration"]) >= 1.0
        assert page.locator("#record").is_disabled()
    finally:
        context.close()
