"""The latency HUD and output tools in real headless Chromium during a call (issue 6, point 3).

Chromium's fake camera plays a y4m made by ffmpeg; the server runs passthrough with a 40 ms simulated model
(so the server stage timings are clearly non-zero). Checks: the HUD shows decoded fps > 0 and latency figures,
toggles with "h" and its button; the snapshot button downloads a PNG of the output; "open output" and
"copy OBS URL" give the session's MJPEG stream, which serves JPEG parts. Screenshot: tests/artifacts/hud.png.
"""

from __future__ import annotations

import io
import re
import urllib.request

import pytest
from PIL import Image

from tests.browser import require_chromium

pytestmark = pytest.mark.browser

TOKEN = "hud-test-token"
sync_api = require_chromium()


def _num(text: str) -> float | None:
    match = re.match(r"\s*(-?\d+(?:\.\d+)?)", text)
    return float(match.group(1)) if match else None


def test_hud_snapshot_and_output_links(camera_chromium, start_server, artifacts_dir, tmp_path):
    server = start_server("--token", TOKEN, "--simulate-model-ms", "40")
    context = camera_chromium.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base)
    page = context.new_page()
    page.on("console", lambda msg: print(f"[browser {msg.type}] {msg.text}"))
    try:
        page.goto(f"{server.base}/?token={TOKEN}")
        page.wait_for_selector("#start:not([disabled])", timeout=15_000)
        assert page.locator("#snapshot").is_disabled() and page.locator("#copy-obs-url").is_disabled()
        page.evaluate("localStorage.removeItem('speakdraw.hud')")

        page.click("#start")
        page.wait_for_function("() => document.getElementById('remote-video').videoWidth > 0", timeout=30_000)

        # HUD: decoded fps > 0, server stages, in-server age and a round-trip figure, all from live data.
        page.wait_for_function(
            "() => { const h = window.speakdraw.hud; return h.fps > 0 && h.server && h.roundTripMs > 0"
            " && h.netMs !== null && h.jitterMs !== null; }",
            timeout=15_000,
        )
        page.wait_for_timeout(1500)  # one more poll so the text shows settled values
        assert page.locator("#hud").is_visible()
        fps = _num(page.inner_text("#hud-fps"))
        assert fps is not None and fps > 0, page.inner_text("#hud-fps")
        server_stages = page.inner_text("#hud-server")  # "matte / diffuse / encode / total ms"
        stages = [_num(part) for part in server_stages.removesuffix(" ms").split("/")]
        assert len(stages) == 4 and all(v is not None for v in stages), server_stages
        assert stages[1] >= 35 and stages[3] >= stages[1], server_stages  # the 40 ms model shows
        round_trip = _num(page.inner_text("#hud-round-trip"))
        assert round_trip is not None and round_trip > 40, page.inner_text("#hud-round-trip")
        assert page.inner_text("#hud-rtt").endswith("ms")
        net = page.inner_text("#hud-net")
        assert re.match(r"-?\d+ ms \((frames|ping)\)", net), net
        assert _num(page.inner_text("#hud-display")) is not None  # Chromium gives receive/display times
        hud = page.evaluate(
            "() => { const h = window.speakdraw.hud; return {fps: h.fps, net: h.netMs, source: h.netSource,"
            " jitter: h.jitterMs, rtt: h.rttMs, ice: h.iceRttMs, rt: h.roundTripMs, display: h.displayMs,"
            " frameNet: h.frameNetMs, encode: h.encodeMs,"
            " shown: h.server.shown_age_ms, latency: h.server.latency_ms}; }"
        )
        print("HUD figures:", hud)
        page.screenshot(path=str(artifacts_dir / "hud.png"))

        # Toggles: the "h" key (not while typing) and the button.
        page.locator("body").press("h")
        assert not page.locator("#hud").is_visible()
        page.fill("#prompt", "h")  # typing an "h" into the prompt leaves the HUD alone
        assert not page.locator("#hud").is_visible()
        page.click("#more-toggle")  # the HUD button and the output links are in the call bar's "More"
        page.click("#hud-toggle")
        assert page.locator("#hud").is_visible()
        assert page.get_attribute("#hud-toggle", "aria-pressed") == "true"

        # Snapshot: a PNG of the output frame, made in the page.
        page.wait_for_selector("#snapshot:not([disabled])", timeout=5_000)
        with page.expect_download() as info:
            page.click("#snapshot")
        download = info.value
        assert download.suggested_filename.endswith(".png")
        path = tmp_path / download.suggested_filename
        download.save_as(path)
        with Image.open(path) as img:
            assert img.format == "PNG"
            assert img.size == (512, 512)

        # Output links: the session's MJPEG stream, with the token; the stream really serves JPEG parts.
        session_id = page.evaluate("window.speakdraw.state.call.sessionId")
        href = page.get_attribute("#open-output", "href")
        assert href == f"/api/sessions/{session_id}/stream.mjpg?token={TOKEN}"
        page.click("#more-toggle")  # (the snapshot click outside it closed the menu)
        page.click("#copy-obs-url")
        obs_url = page.evaluate("navigator.clipboard.readText()")
        assert obs_url == f"{server.base}{href}"
        with urllib.request.urlopen(obs_url, timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            head = resp.read(200_000)
        start = head.index(b"\r\n\r\n") + 4
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        with Image.open(io.BytesIO(head[start : start + length])) as jpeg:
            assert jpeg.format == "JPEG" and jpeg.size == (512, 512)

        page.click("#stop")
        page.wait_for_selector("#start:not([disabled])", timeout=5_000)
        page.wait_for_timeout(1200)
        assert page.inner_text("#hud-fps") == "–"
        assert page.locator("#copy-obs-url").is_disabled()
    finally:
        context.close()
