"""The real call page in headless Debian Chromium against the real server (issue 2, point 2).

Chromium's fake camera plays a y4m made by ffmpeg and its fake mic a wav made by espeak-ng; the server runs
the passthrough engine. Each test starts a call, checks that the remote <video> plays frames the server
sent (and that they are the server's processed frames, not an echo), that the stats panel updates, and
saves a screenshot under tests/artifacts/.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import launch_chromium, require_chromium
from tests.media import make_speech_wav, make_y4m
from tests.serverproc import free_port

pytestmark = pytest.mark.browser

TOKEN = "browser-test-token"
sync_api = require_chromium()


@pytest.fixture(scope="module")
def fake_media(tmp_path_factory) -> tuple[Path, Path]:
    for tool in ("ffmpeg", "espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    out = tmp_path_factory.mktemp("media")
    return make_y4m(out, seconds=2.0, fps=15), make_speech_wav(out, "a watercolor painting of a lighthouse")


@pytest.fixture(scope="module")
def chromium(fake_media) -> Iterator:
    video, audio = fake_media
    with sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw, video=video, audio=audio, https=True)
        yield browser
        browser.close()


# A <video>'s current frame as a 16x16 grid of RGB cells (drawn to a canvas in the page; CSS mirroring
# does not affect drawImage).
CELLS_JS = """(id) => {
  const v = document.getElementById(id);
  if (!v.videoWidth) return null;
  const c = document.createElement('canvas');
  c.width = 16; c.height = 16;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0, 16, 16);
  return Array.from(g.getImageData(0, 0, 16, 16).data).filter((_, i) => i % 4 !== 3);
}"""


def _agreement(page, *, inverted: bool) -> float:
    """Fraction of grid cells where the remote frame matches the camera frame (or its negative)."""
    local = page.evaluate(CELLS_JS, "local-video")
    remote = page.evaluate(CELLS_JS, "remote-video")
    expected = [255 - v for v in local] if inverted else local
    close = [abs(e - r) < 64 for e, r in zip(expected, remote, strict=True)]
    cells = [all(close[i : i + 3]) for i in range(0, len(close), 3)]
    return sum(cells) / len(cells)


INBOUND_JS = """async () => {
  const call = window.speakdraw.state.call;
  if (!call) return null;
  const s = await call.inboundVideoStats();
  return s ? {framesDecoded: s.framesDecoded || 0, frameWidth: s.frameWidth || 0} : null;
}"""


def _open_page(browser, url: str, **context_args):
    context = browser.new_context(**context_args)
    page = context.new_page()
    page.on("console", lambda msg: print(f"[browser {msg.type}] {msg.text}"))
    page.goto(url)
    page.wait_for_selector("#start:not([disabled])", timeout=15_000)
    return context, page


# The newest `stats` message next to what the stats panel shows from it (both change in the same event task).
LAST_STATS_JS = """() => new Promise((resolve) => {
  const channel = window.speakdraw.state.call.channel;
  const onMessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type !== 'stats') return;
    channel.removeEventListener('message', onMessage);
    setTimeout(() => resolve({msg, shown: document.getElementById('stats-dropped').textContent}), 0);
  };
  channel.addEventListener('message', onMessage);
})"""


def _check_dropped(page) -> None:
    """ "dropped" on the page is the server's count, and it agrees with the frames the server counted: every
    frame sent back is a received frame that was not dropped (passthrough, no failures, no repeats)."""
    got = page.evaluate(LAST_STATS_JS)
    msg = got["msg"]
    dropped, frames_in, frames_out = msg["dropped"], msg["frames_in"], msg["frames_out"]
    assert got["shown"] == str(dropped), got
    assert isinstance(dropped, int) and 0 <= dropped <= frames_in, msg
    assert msg["errors"] == 0 and frames_in > 0, msg
    assert frames_out <= frames_in - dropped, msg  # nothing sent that did not come in, or came in and was dropped


def _check_call(page, server, screenshot: Path, *, invert_before_call: bool) -> None:
    """Start a call and check what a person would see: server video playing, stats moving, controls live.

    With `invert_before_call` the effect is chosen before the call (it travels with the offer), else during it
    (over the data channel).
    """
    # Controls come from the server's schema.
    assert page.locator("#setting-mode option").all_inner_texts() == ["full", "human"]
    assert page.locator("#setting-strength").get_attribute("type") == "range"
    assert page.locator("#transcript").inner_text().strip() == ""
    if invert_before_call:
        page.click("#more-settings summary")
        page.select_option("#setting-passthrough_effect", "invert")
        page.click("#more-settings summary")

    page.click("#start")
    page.wait_for_function(
        "() => { const v = document.getElementById('remote-video'); return v.videoWidth > 0 && v.currentTime > 0; }",
        timeout=30_000,
    )
    assert page.locator("#stop").is_enabled()
    first = page.evaluate(INBOUND_JS)
    t0 = page.evaluate("document.getElementById('remote-video').currentTime")
    page.wait_for_timeout(2000)
    second = page.evaluate(INBOUND_JS)
    t1 = page.evaluate("document.getElementById('remote-video').currentTime")
    assert t1 > t0 + 1.0, f"remote video is not advancing: {t0} -> {t1}"
    assert second["framesDecoded"] > first["framesDecoded"] + 5, (first, second)
    assert second["frameWidth"] > 0

    # The stats panel is fed by the server once a second; the ping RTT by our own pings.
    page.wait_for_function(
        "() => parseFloat(document.getElementById('stats-fps-out').textContent) > 0"
        " && parseFloat(document.getElementById('stats-fps-in').textContent) > 0",
        timeout=10_000,
    )
    page.wait_for_function("() => document.getElementById('stats-rtt').textContent.endsWith('ms')", timeout=5_000)
    assert page.inner_text("#stats-latency").endswith("ms")
    _check_dropped(page)

    # The frames come from the server's pipeline: with its visible cheap transform (invert) on, chosen from
    # the schema-built control, the remote picture is the negative of the camera's; with it off, the same.
    # (The moving parts of the test pattern differ by a frame or two of delay, hence fractions.)
    page.click("#more-settings summary")
    if invert_before_call:
        assert _agreement(page, inverted=True) > 0.8 and _agreement(page, inverted=False) < 0.2
        page.select_option("#setting-passthrough_effect", "none")
        page.wait_for_timeout(1000)
        assert _agreement(page, inverted=False) > 0.8 and _agreement(page, inverted=True) < 0.2
    else:
        assert _agreement(page, inverted=False) > 0.8 and _agreement(page, inverted=True) < 0.2
        page.select_option("#setting-passthrough_effect", "invert")
        page.wait_for_timeout(1000)
        assert _agreement(page, inverted=True) > 0.8 and _agreement(page, inverted=False) < 0.2

    # Front/back camera: a new camera track replaces the old one on the same sender, no renegotiation.
    old_track = page.evaluate("window.speakdraw.state.call.videoSender.track.id")
    page.click("#switch-camera")
    page.wait_for_selector("#switch-camera:not([disabled])", timeout=10_000)
    assert page.evaluate("window.speakdraw.state.call.videoSender.track.id") != old_track
    t0 = page.evaluate("document.getElementById('remote-video').currentTime")
    page.wait_for_timeout(1000)
    assert page.evaluate("document.getElementById('remote-video').currentTime") > t0 + 0.5

    # The prompt box goes over the data channel; the server's settings reply shows the active prompt.
    page.fill("#prompt", "an oil painting of a fox")
    page.press("#prompt", "Enter")
    page.wait_for_function(
        "() => document.getElementById('active-prompt').textContent === 'an oil painting of a fox'", timeout=5_000
    )

    # Dragging a slider sends throttled partial settings; the server's confirmation lands in the page state.
    page.evaluate(
        "() => { const r = document.getElementById('setting-strength'); r.value = 0.8;"
        " r.dispatchEvent(new Event('input')); }"
    )
    page.wait_for_function("() => window.speakdraw.state.current.strength === 0.8", timeout=5_000)
    assert page.inner_text("#setting-strength-value") == "0.80"

    # A refused value is shown and rolled back; the call keeps going.
    page.fill("#setting-seed", "-5")
    page.press("#setting-seed", "Enter")
    page.wait_for_selector("#settings-error:not([hidden])", timeout=5_000)
    assert "seed" in page.inner_text("#settings-error")
    page.locator("#prompt").focus()
    assert page.input_value("#setting-seed") == "2"

    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)

    assert server.health()["sessions"] == 1
    page.click("#stop")
    page.wait_for_selector("#start:not([disabled])", timeout=5_000)
    page.wait_for_function("() => document.getElementById('remote-video').srcObject === null")
    for _ in range(50):
        if server.health()["sessions"] == 0:
            break
        page.wait_for_timeout(100)
    assert server.health()["sessions"] == 0


def _check_transcript_rendering(page) -> None:
    """The transcript area keeps one line per utterance: partials greyed, then replaced by the final text.

    (The server's speech path feeds it for real elsewhere; here the page's renderer is driven directly.)
    """
    render = """async (msgs) => {
      const { showTranscript } = await import('/static/panels.js');
      for (const m of msgs) showTranscript({ type: 'transcript', ...m });
      return [...document.querySelectorAll('#transcript p')].map(p => [p.textContent, p.className]);
    }"""
    lines = page.evaluate(render, [{"utterance": 1, "text": "a red", "final": False}])
    assert lines == [["a red", "partial"]]
    assert page.evaluate("getComputedStyle(document.querySelector('#transcript p')).fontStyle") == "italic"
    lines = page.evaluate(
        render,
        [{"utterance": 1, "text": "a red fox", "final": True}, {"utterance": 2, "text": "in the", "final": False}],
    )
    assert lines == [["a red fox", "final"], ["in the", "partial"]]


def test_desktop_call_over_http(chromium, start_server, artifacts_dir):
    server = start_server()
    context, page = _open_page(chromium, server.base + "/", viewport={"width": 1280, "height": 900})
    try:
        _check_call(page, server, artifacts_dir / "browser-desktop.png", invert_before_call=False)
        _check_transcript_rendering(page)
    finally:
        context.close()


def test_phone_call_over_https_with_token(chromium, start_server, artifacts_dir):
    https_port = free_port()
    server = start_server("--token", TOKEN, https_port=https_port)
    base = f"https://127.0.0.1:{https_port}"
    phone = {
        "viewport": {"width": 390, "height": 844},
        "device_scale_factor": 2,
        "is_mobile": True,
        "has_touch": True,
        "ignore_https_errors": True,
    }

    # Without the token the page says why it cannot work, and offers no call.
    context = chromium.new_context(**phone)
    try:
        page = context.new_page()
        page.goto(base + "/")
        page.wait_for_selector("#error:not([hidden])", timeout=15_000)
        error = page.inner_text("#error")
        assert "token" in error and "join URL" in error, error
        assert page.locator("#start").is_disabled()
        page.screenshot(path=str(artifacts_dir / "browser-phone-no-token.png"))
    finally:
        context.close()

    context, page = _open_page(chromium, f"{base}/?token={TOKEN}", **phone)
    try:
        assert page.evaluate("window.isSecureContext")
        _check_call(page, server, artifacts_dir / "browser-phone.png", invert_before_call=True)
    finally:
        context.close()
