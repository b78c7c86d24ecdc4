"""The image-prompt control in real headless Chromium (issue 7, point 3 and the page side of point 1).

- `--engine tiny` is the sd-turbo family (SD 2.x-shaped): the control is disabled and the page shows why.
  Screenshot: tests/artifacts/image-prompt-unavailable.png.
- `--engine tiny --model tiny-sd15` (SD 1.5-shaped, tiny IP-Adapter): during a call with Chromium's fake
  camera, "Use camera frame" and a file upload both set the session's image prompt (the server says so),
  and "Clear" clears it. Screenshot: tests/artifacts/image-prompt-call.png.
"""

from __future__ import annotations

import io
import json
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.browser import require_chromium

pytestmark = pytest.mark.browser

TOKEN = "image-prompt-token"
sync_api = require_chromium()


def _server_state(server, session_id: str) -> dict:
    req = urllib.request.Request(
        f"{server.base}/api/sessions/{session_id}/image-prompt", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_sd_turbo_family_shows_the_control_disabled_with_the_reason(camera_chromium, start_server, artifacts_dir):
    server = start_server("--token", TOKEN, engine="tiny")
    page = camera_chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
    try:
        page.goto(f"{server.base}/?token={TOKEN}")
        page.wait_for_selector("#image-prompt-reason:not([hidden])", timeout=20_000)
        page.wait_for_function(
            "() => document.getElementById('image-prompt-reason').textContent.includes('SD 2')", timeout=20_000
        )
        reason = page.inner_text("#image-prompt-reason")
        assert "sd-turbo" in reason and "SD 1.5" in reason, reason
        for control in ("#image-prompt-file", "#image-prompt-grab", "#image-prompt-clear"):
            assert page.locator(control).is_disabled(), control
        page.click("#start")
        page.wait_for_function("() => document.getElementById('remote-video').videoWidth > 0", timeout=30_000)
        page.wait_for_timeout(500)
        assert page.locator("#image-prompt-grab").is_disabled()  # still, during the call
        page.locator("#image-prompt-panel").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "image-prompt-unavailable.png"), full_page=True)
    finally:
        page.context.close()


def test_camera_frame_and_upload_set_the_image_prompt(camera_chromium, start_server, artifacts_dir, tmp_path):
    server = start_server("--token", TOKEN, "--model", "tiny-sd15", engine="tiny")
    page = camera_chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.on("console", lambda msg: print(f"[browser {msg.type}] {msg.text}"))
    try:
        page.goto(f"{server.base}/?token={TOKEN}")
        page.wait_for_selector("#image-prompt-file:not([disabled])", timeout=20_000)
        assert page.locator("#image-prompt-reason").is_hidden()
        assert page.locator("#image-prompt-grab").is_disabled()  # no call yet: no camera frame to grab
        page.click("#start")
        page.wait_for_function("() => document.getElementById('remote-video').videoWidth > 0", timeout=30_000)
        page.wait_for_function("() => window.speakdraw.imagePrompt.sessionId", timeout=10_000)
        session_id = page.evaluate("window.speakdraw.imagePrompt.sessionId")
        assert _server_state(server, session_id)["image_prompt"] is False

        page.click("#image-prompt-grab")
        page.wait_for_function("() => window.speakdraw.imagePrompt.active", timeout=20_000)
        assert "in use" in page.inner_text("#image-prompt-status")
        assert "jpeg" in page.inner_text("#image-prompt-status")
        assert _server_state(server, session_id) == {"image_prompt": True, "available": True, "reason": None}

        page.click("#image-prompt-clear")
        page.wait_for_function("() => !window.speakdraw.imagePrompt.active", timeout=10_000)
        assert _server_state(server, session_id)["image_prompt"] is False

        picture = tmp_path / "look.png"
        blocks = np.random.default_rng(0).integers(0, 256, (9, 12, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(np.kron(blocks, np.ones((20, 20, 1), np.uint8))).save(buf, format="PNG")
        picture.write_bytes(buf.getvalue())
        page.set_input_files("#image-prompt-file", str(picture))
        page.wait_for_function("() => window.speakdraw.imagePrompt.active", timeout=20_000)
        assert "240×180 png" in page.inner_text("#image-prompt-status")
        assert _server_state(server, session_id)["image_prompt"] is True
        assert page.locator("#image-prompt-preview").is_visible()

        bad = tmp_path / "not-an-image.png"
        bad.write_bytes(b"plain text with a .png name")
        page.set_input_files("#image-prompt-file", str(bad))
        page.wait_for_function(
            "() => document.getElementById('image-prompt-status').textContent.includes('unsupported_media_type')",
            timeout=10_000,
        )
        assert _server_state(server, session_id)["image_prompt"] is True  # the refused file changed nothing
        page.wait_for_timeout(500)
        page.locator("#image-prompt-panel").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "image-prompt-call.png"), full_page=True)
    finally:
        page.context.close()
