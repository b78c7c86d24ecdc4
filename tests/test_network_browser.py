"""The call page in headless Chromium on "real network" terms (issue 15): relay-only through coturn with the
page's own /api/ice credentials, refused credentials, rejoin after the relay dies, H.264."""

from __future__ import annotations

import pytest

from tests.coturn import Coturn

pytestmark = pytest.mark.browser

PLAYING_JS = (
    "() => { const v = document.getElementById('remote-video'); return v.videoWidth > 0 && v.currentTime > 0; }"
)

# What getStats says about the call: selected pair's local candidate type, codecs both ways, frames decoded.
STATS_JS = """async () => {
  const pc = window.speakdraw.state.call.pc;
  const report = await pc.getStats();
  const byId = new Map(); report.forEach((s) => byId.set(s.id, s));
  let pair = null, inbound = null, outbound = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId);
    if (s.type === 'inbound-rtp' && s.kind === 'video') inbound = s;
    if (s.type === 'outbound-rtp' && s.kind === 'video') outbound = s;
  });
  const local = pair ? byId.get(pair.localCandidateId) : null;
  const codec = (s) => (s && s.codecId && byId.get(s.codecId) ? byId.get(s.codecId).mimeType : null);
  return {
    localType: local ? local.candidateType : null,
    inCodec: codec(inbound), outCodec: codec(outbound),
    framesDecoded: inbound ? inbound.framesDecoded || 0 : 0,
    state: pc.connectionState,
  };
}"""


@pytest.fixture
def coturn(tmp_path):
    server = Coturn(tmp_path).start()
    yield server
    server.stop()


def open_page(browser, base: str):
    context = browser.new_context()
    page = context.new_page()
    page.on("console", lambda msg: print(f"[browser {msg.type}] {msg.text}"))
    page.goto(base + "/")
    page.wait_for_selector("#start:not([disabled])", timeout=20_000)
    return context, page


def wait_playing(page, timeout_ms: int = 30_000) -> dict:
    page.wait_for_function(PLAYING_JS, timeout=timeout_ms)
    first = page.evaluate(STATS_JS)
    page.wait_for_timeout(1500)
    second = page.evaluate(STATS_JS)
    assert second["framesDecoded"] > first["framesDecoded"] + 5, (first, second)
    return second


def relay_server(start_server, coturn, *extra: str):
    return start_server(
        "--turn-url", coturn.url, "--turn-secret", coturn.secret, "--ice-transport-policy", "relay", *extra
    )


def test_relay_only_call_in_chromium(camera_chromium, start_server, coturn):
    server = relay_server(start_server, coturn)
    context, page = open_page(camera_chromium, server.base)
    try:
        page.click("#start")
        stats = wait_playing(page)
        assert stats["localType"] == "relay", stats
        assert page.evaluate("window.speakdraw.state.call.ice.iceTransportPolicy") == "relay"
    finally:
        context.close()


def test_refused_turn_credentials_are_shown(camera_chromium, start_server, coturn):
    server = start_server(
        "--ice-server", f"turn:nobody:wrong@127.0.0.1:{coturn.port}", "--ice-transport-policy", "relay"
    )
    context, page = open_page(camera_chromium, server.base)
    try:
        page.click("#start")
        page.wait_for_selector("#error:not([hidden])", timeout=20_000)
        text = page.inner_text("#error")
        assert "no relay candidates" in text and "TURN server refused" in text, text
        page.wait_for_selector("#start:not([disabled])", timeout=5_000)
        assert server.health()["sessions"] == 0
    finally:
        context.close()


@pytest.mark.parametrize("choice", ["h264"])
def test_h264_call_in_chromium(camera_chromium, start_server, choice):
    server = start_server("--video-codec", choice)
    context, page = open_page(camera_chromium, server.base)
    try:
        page.click("#start")
        stats = wait_playing(page)
        assert stats["inCodec"] == "video/H264" and stats["outCodec"] == "video/H264", stats
    finally:
        context.close()


@pytest.mark.slow
def test_rejoins_after_the_relay_comes_back(camera_chromium, start_server, coturn):
    server = relay_server(start_server, coturn)
    context, page = open_page(camera_chromium, server.base)
    try:
        page.click("#start")
        wait_playing(page)
        page.fill("#prompt", "a lighthouse at dusk")
        page.press("#prompt", "Enter")
        page.wait_for_function(
            "() => document.getElementById('active-prompt').textContent === 'a lighthouse at dusk'", timeout=5_000
        )
        session_id = page.evaluate("window.speakdraw.state.call.sessionId")
        coturn.stop()  # the relay dies mid-call
        page.wait_for_function(
            "() => document.getElementById('status').textContent.startsWith('reconnecting')", timeout=20_000
        )
        page.wait_for_timeout(5000)
        coturn.start()
        restarted = page.evaluate("performance.now()")
        page.wait_for_function("() => Boolean(window.speakdraw.state.call.lastReconnect)", timeout=10_000)
        reconnect = page.evaluate("window.speakdraw.state.call.lastReconnect")
        assert reconnect["resumed"] is True and reconnect["at"] - restarted <= 10_000, reconnect
        print(f"rejoined {reconnect['at'] - restarted:.0f} ms after the relay restart, try {reconnect['attempts']}")
        assert page.evaluate("window.speakdraw.state.call.lastAnswer") == {"session_id": session_id, "resumed": True}
        stats = wait_playing(page)  # the new connection plays
        assert stats["localType"] == "relay"
        settings = page.evaluate(
            """() => new Promise((resolve) => {
              const call = window.speakdraw.state.call;
              const onMsg = (e) => { const m = JSON.parse(e.data); if (m.type === 'settings') resolve(m.settings); };
              call.channel.addEventListener('message', onMsg);
              call.send({type: 'settings', settings: {}});
            })"""
        )
        assert settings["prompt"] == "a lighthouse at dusk" and settings["seed"] == 2
        assert server.health()["sessions"] == 1
    finally:
        context.close()


@pytest.mark.slow
def test_gives_up_visibly_without_the_relay(camera_chromium, start_server, coturn):
    server = relay_server(start_server, coturn)
    context, page = open_page(camera_chromium, server.base)
    try:
        page.click("#start")
        wait_playing(page)
        coturn.stop()
        page.wait_for_function(
            "() => document.getElementById('status').textContent.startsWith('reconnecting')", timeout=20_000
        )
        page.wait_for_function(
            "() => document.getElementById('status').textContent.startsWith('gave up reconnecting')", timeout=90_000
        )
        assert page.locator("#start").is_enabled()
    finally:
        context.close()


def _offer_sdp() -> str:
    """An aiortc offer with a video track (made in its own thread: Playwright's sync API owns this one's loop)."""
    import asyncio
    import concurrent.futures

    from aiortc import RTCConfiguration, RTCPeerConnection

    from tests.rtc_client import PatternVideoTrack

    async def make() -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(PatternVideoTrack())
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result(30)


def _http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_page_waits_while_the_server_is_full(camera_chromium, start_server):
    """503 too_many_sessions: the page says the server is full, counts down, and retries by itself."""
    server = start_server("--max-sessions", "1")
    status, occupant = _http("POST", server.base + "/api/offer", {"sdp": _offer_sdp(), "type": "offer"})
    assert status == 200  # one session: the server is full
    context, page = open_page(camera_chromium, server.base)
    try:
        page.click("#start")
        page.wait_for_function(
            "() => /^the server is full, retrying in \\d+ s$/.test(document.getElementById('status').textContent)",
            timeout=20_000,
        )
        assert _http("DELETE", f"{server.base}/api/sessions/{occupant['session_id']}")[0] == 200
        wait_playing(page, timeout_ms=40_000)
        assert server.health()["sessions"] == 1
    finally:
        context.close()
