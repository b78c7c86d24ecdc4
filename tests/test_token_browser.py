"""The join URL's token in real headless Chromium (issue 14, row 11): the page takes it out of the address
bar (kept in this tab's sessionStorage), the call still works with it, and it reaches no log line."""

from __future__ import annotations

import pytest

from tests.browser import require_chromium

pytestmark = pytest.mark.browser

TOKEN = "PageT0kenStripped"
sync_api = require_chromium()


def test_the_page_strips_the_token_from_the_address_bar_and_the_call_works(camera_chromium, start_server):
    server = start_server("--token", TOKEN, "--log-level", "info")
    context = camera_chromium.new_context()
    page = context.new_page()
    page.on("console", lambda msg: print(f"[browser {msg.type}] {msg.text}"))
    try:
        page.goto(f"{server.base}/?token={TOKEN}#x")
        page.wait_for_selector("#start:not([disabled])", timeout=15_000)
        assert TOKEN not in page.url and "token" not in page.url, page.url
        assert page.url.endswith("/#x"), page.url  # the rest of the address is kept
        assert page.evaluate("sessionStorage.getItem('speakdraw-token')") == TOKEN

        page.click("#start")  # /api/offer needs the token: it comes from sessionStorage now
        page.wait_for_function(
            "() => { const v = document.getElementById('remote-video');"
            " return v.videoWidth > 0 && v.currentTime > 0; }",
            timeout=30_000,
        )
        t0 = page.evaluate("document.getElementById('remote-video').currentTime")
        page.wait_for_timeout(1500)
        assert page.evaluate("document.getElementById('remote-video').currentTime") > t0 + 0.5
        assert server.health()["sessions"] == 1
        page.click("#stop")

        page.reload()  # the address no longer has it; this tab still does
        page.wait_for_selector("#start:not([disabled])", timeout=15_000)
        assert "token" not in page.url
        status = page.evaluate(
            "async () => (await import('/static/api.js')).apiFetch('/api/settings').then(() => 200, e => e.status)"
        )
        assert status == 200
    finally:
        context.close()
    leaks = [line for line in server.log_text().splitlines() if TOKEN in line and "desktop:" not in line]
    assert not leaks, leaks  # neither the page load, its Referer, nor any module request logged it
