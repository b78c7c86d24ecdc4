"""The phone's screen stays on during a call (issue 23, point 3): the page takes a Screen Wake Lock when the call
starts, takes it again when the page comes back after being hidden, and lets it go on hang-up; a browser that
refuses one changes nothing but a notice.

Read through a page hook: an init script wraps `navigator.wakeLock.request` (Chromium's own, which headless
grants) to count requests and the sentinels' releases, and can refuse as a browser does (NotAllowedError).
Headless tabs are never hidden, so the hook plays that part: it releases the lock as the browser would and
fires `visibilitychange` with `document.visibilityState` set.
"""

from __future__ import annotations

import pytest

from tests.browser import IPHONE_13, PLAYING_JS, require_chromium

pytestmark = pytest.mark.browser
require_chromium()

HOOK_JS = """(() => {
  const hook = (window.__wake = { requests: 0, released: 0, refuse: false, sentinels: [] });
  const real = navigator.wakeLock;
  Object.defineProperty(navigator, 'wakeLock', { configurable: true, value: {
    request: async (type) => {
      hook.requests += 1;
      if (hook.refuse) throw new DOMException('the test refuses wake locks', 'NotAllowedError');
      const sentinel = await real.request(type);
      hook.sentinels.push(sentinel);
      sentinel.addEventListener('release', () => { hook.released += 1; });
      return sentinel;
    },
  }});
  hook.setVisibility = (state) => {
    if (state === 'hidden') for (const s of hook.sentinels) if (!s.released) s.release(); // as the browser does
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => state });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => state !== 'visible' });
    document.dispatchEvent(new Event('visibilitychange'));
  };
})();"""


def _open(browser, server):
    context = browser.new_context(**IPHONE_13)
    context.add_init_script(HOOK_JS)
    page = context.new_page()
    page.on("console", lambda msg: print(f"[browser {msg.type}] {msg.text}"))
    page.goto(server.base + "/")
    page.wait_for_selector("#start:not([disabled])", timeout=20_000)
    return context, page


def test_wake_lock_held_during_the_call_retaken_when_visible_released_on_hang_up(camera_chromium, start_server):
    server = start_server()
    context, page = _open(camera_chromium, server)
    try:
        page.wait_for_timeout(500)
        assert page.evaluate("window.__wake.requests") == 0  # not before a call
        page.click("#start")
        page.wait_for_function(PLAYING_JS, timeout=30_000)
        page.wait_for_function("() => window.speakdraw.wakeLock.held === true", timeout=5_000)
        assert page.evaluate("window.__wake.requests") == 1

        # The person switches apps: the browser drops the lock; back on the page, it is taken again.
        page.evaluate("window.__wake.setVisibility('hidden')")
        page.wait_for_function("() => window.speakdraw.wakeLock.held === false", timeout=5_000)
        assert page.evaluate("window.__wake.requests") == 1  # not while hidden
        page.evaluate("window.__wake.setVisibility('visible')")
        page.wait_for_function("() => window.speakdraw.wakeLock.held === true", timeout=5_000)
        assert page.evaluate("window.__wake.requests") == 2

        page.click("#stop")
        page.wait_for_selector("#start:not([disabled])", timeout=10_000)
        page.wait_for_function("() => window.__wake.released === 2", timeout=5_000)  # the browser's, then ours
        assert page.evaluate("window.__wake.sentinels.every((s) => s.released)")
        assert page.evaluate("window.speakdraw.wakeLock.held") is False
        # After the call, coming back to the page takes no lock.
        page.evaluate("window.__wake.setVisibility('hidden')")
        page.evaluate("window.__wake.setVisibility('visible')")
        page.wait_for_timeout(300)
        assert page.evaluate("window.__wake.requests") == 2
    finally:
        context.close()


def test_a_refused_wake_lock_leaves_the_call_alone(camera_chromium, start_server):
    server = start_server()
    context, page = _open(camera_chromium, server)
    try:
        page.evaluate("window.__wake.refuse = true")
        page.click("#start")
        page.wait_for_function(PLAYING_JS, timeout=30_000)
        page.wait_for_function("() => window.speakdraw.wakeLock.refused !== null", timeout=5_000)
        assert "NotAllowedError" in page.evaluate("window.speakdraw.wakeLock.refused")
        notices = page.inner_text("#warnings")
        assert notices.count("The screen may turn off during the call") == 1, notices
        assert page.locator("#error").is_hidden()
        t0 = page.evaluate("document.getElementById('remote-video').currentTime")
        page.wait_for_timeout(1000)
        assert page.evaluate("document.getElementById('remote-video').currentTime") > t0 + 0.5  # the call plays on
        page.click("#stop")
        page.wait_for_selector("#start:not([disabled])", timeout=10_000)
    finally:
        context.close()
