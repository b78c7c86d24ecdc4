"""On a phone the picture comes first (issue 23): the call page's layout in real headless Chromium, in a call.

The fake camera shows a real photo (a person facing the camera); the server is the default command offline
(the style engine paints, a notice says why) or passthrough where only the layout matters.
At 390x664 (iPhone 13), 412x839 (Pixel 7) and 1280x800: the transformed picture's box (#remote-video, sized to
the picture's aspect) lies inside the viewport without scrolling and spans the width of a portrait phone; the
self-view is a small overlay on it; tap swaps, drag and arrow keys move it; rotation relayouts; full screen;
a long status ("the server is full, retrying") leaves the stage on screen. Screenshots: tests/artifacts/.
"""

from __future__ import annotations

import pytest

from tests.browser import (
    BOXES_JS,
    DESKTOP,
    IPHONE_13,
    PIXEL_7,
    PLAYING_JS,
    inside_fraction,
    offline_default_server,
    open_call_page,
    require_chromium,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
require_chromium()

DEVICES = {"iphone13": IPHONE_13, "pixel7": PIXEL_7, "desktop": DESKTOP}


@pytest.fixture(scope="module")
def style_server(tmp_path_factory):
    """The default command offline: the style engine paints, and a notice says why (it takes room too)."""
    server = offline_default_server(tmp_path_factory.mktemp("offline"))
    yield server
    server.stop()


def _area(box: dict) -> float:
    return box["w"] * box["h"]


def _check_stage(boxes: dict, *, portrait_phone: bool) -> None:
    """The issue's measure: the stage's box on screen, without scrolling; the self-view small, on top of it."""
    vw, vh, remote, self_view = boxes["vw"], boxes["vh"], boxes["remote"], boxes["self"]
    assert boxes["scrollY"] == 0
    inside = inside_fraction(remote, vw, vh)
    assert inside >= (0.95 if portrait_phone else 0.99), boxes
    if portrait_phone:
        assert remote["w"] >= 0.9 * vw, boxes
    if boxes["videoAspect"]:  # the box is the picture (no letterbox counted as stage)
        assert abs(remote["w"] / remote["h"] - boxes["videoAspect"]) < 0.02, boxes
    assert 0 < _area(self_view) <= 0.30 * _area(remote), boxes
    # an overlay inside the stage's box, not a second row
    assert self_view["x"] >= remote["x"] - 1 and self_view["x"] + self_view["w"] <= remote["x"] + remote["w"] + 1
    assert self_view["y"] >= remote["y"] - 1 and self_view["y"] + self_view["h"] <= remote["y"] + remote["h"] + 1


def _start_call(page) -> None:
    page.click("#start")
    page.wait_for_function(PLAYING_JS, timeout=40_000)
    page.wait_for_selector("#stop:not([disabled])", timeout=5_000)
    page.wait_for_timeout(1500)  # a few painted frames, and the aspect from the first one


def _hang_up(page) -> None:
    page.click("#stop")
    page.wait_for_selector("#start:not([disabled])", timeout=10_000)


@pytest.mark.parametrize("device", list(DEVICES))
def test_the_painted_picture_is_the_stage(photo_chromium, style_server, artifacts_dir, device):
    context, page = open_call_page(photo_chromium, style_server.base + "/", **DEVICES[device])
    try:
        _start_call(page)
        boxes = page.evaluate(BOXES_JS)
        print(device, boxes)
        inside = inside_fraction(boxes["remote"], boxes["vw"], boxes["vh"])
        share = _area(boxes["self"]) / _area(boxes["remote"])
        print(f"{device}: stage {inside:.0%} inside, {boxes['remote']['w'] / boxes['vw']:.0%} of the width;")
        print(f"  self-view {share:.1%} of the stage")
        _check_stage(boxes, portrait_phone=device != "desktop")
        assert page.locator("#warnings").is_visible()  # the fallback's notice is on the page, and fits too
        for video in ("#remote-video", "#local-video"):  # iOS plays inline only with these
            assert page.evaluate(
                "(sel) => { const v = document.querySelector(sel); return v.playsInline && v.autoplay && v.muted; }",
                video,
            ), video
        # The controls are on the first screen too: hang up, record, the prompt.
        for control in ("#stop", "#record", "#prompt"):
            assert inside_fraction(_box(page, control), boxes["vw"], boxes["vh"]) == 1.0, control
        page.screenshot(path=str(artifacts_dir / f"phone-layout-{device}.png"))

        if device == "desktop":
            # Side by side: your camera left of the painted picture, the same size, both on screen.
            page.click("#more-toggle")
            page.click("#layout-toggle")
            page.wait_for_function("() => document.getElementById('stage').classList.contains('side-by-side')")
            side = page.evaluate(BOXES_JS)
            local, remote = side["self"], side["remote"]
            assert abs(local["y"] - remote["y"]) < 2 and remote["x"] >= local["x"] + local["w"] - 1, side
            assert abs(_area(local) - _area(remote)) < 0.02 * _area(remote), side
            assert inside_fraction(remote, side["vw"], side["vh"]) == 1.0
            assert inside_fraction(local, side["vw"], side["vh"]) == 1.0
            page.keyboard.press("Escape")
            page.screenshot(path=str(artifacts_dir / "phone-layout-desktop-side-by-side.png"))
            page.click("#more-toggle")
            page.click("#layout-toggle")  # back, and remembered as off for the next test
            page.keyboard.press("Escape")
        _hang_up(page)
    finally:
        context.close()


def _box(page, selector: str) -> dict:
    r = page.locator(selector).bounding_box()
    return {"x": r["x"], "y": r["y"], "w": r["width"], "h": r["height"]}


def _center(box: dict) -> tuple[float, float]:
    return box["x"] + box["w"] / 2, box["y"] + box["h"] / 2


def _tap(page, selector: str) -> None:
    """A finger's tap where the element is (Playwright's locator tap may scroll the page first)."""
    page.touchscreen.tap(*_center(_box(page, selector)))


def test_self_view_swaps_moves_and_the_stage_follows_rotation(photo_chromium, start_server, artifacts_dir):
    server = start_server()
    context, page = open_call_page(photo_chromium, server.base + "/", **IPHONE_13)
    try:
        _start_call(page)
        start = page.evaluate(BOXES_JS)
        assert start["self"]["x"] > start["remote"]["x"] + start["remote"]["w"] / 2  # bottom-right by default
        assert start["self"]["y"] > start["remote"]["y"] + start["remote"]["h"] / 2

        # Tap: your camera becomes the stage, the painted picture the overlay; tap again: back.
        _tap(page, "#swap-views")
        page.wait_for_function("() => window.speakdraw.layout.swapped === true")
        swapped = page.evaluate(BOXES_JS)
        assert _area(swapped["self"]) > 3 * _area(swapped["remote"]), swapped
        assert swapped["self"]["w"] >= 0.9 * swapped["vw"]
        _tap(page, "#swap-views")
        page.wait_for_function("() => window.speakdraw.layout.swapped === false")
        assert _area(page.evaluate(BOXES_JS)["remote"]) == pytest.approx(_area(start["remote"]), rel=0.01)

        # Drag it to the top-left: it follows the pointer, then snaps to that corner (and is not a tap: no swap).
        x, y = _center(_box(page, "#self-tile"))
        stage = _box(page, "#stage-box")
        page.mouse.move(x, y)
        page.mouse.down()
        for step in range(1, 11):
            page.mouse.move(x - (x - stage["x"] - 40) * step / 10, y - (y - stage["y"] - 40) * step / 10)
        page.mouse.up()
        page.wait_for_function("() => window.speakdraw.layout.corner === 'tl'")
        page.wait_for_timeout(300)  # the snap's transition
        moved = _box(page, "#self-tile")
        assert moved["x"] < stage["x"] + stage["w"] / 4 and moved["y"] < stage["y"] + stage["h"] / 4, moved
        assert page.evaluate("window.speakdraw.layout.swapped") is False

        # The keyboard does the same: arrows move it between corners, Enter swaps.
        page.focus("#swap-views")
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowRight")
        assert page.evaluate("window.speakdraw.layout.corner") == "br"
        page.keyboard.press("Enter")
        page.wait_for_function("() => window.speakdraw.layout.swapped === true")
        page.keyboard.press("Enter")
        page.wait_for_function("() => window.speakdraw.layout.swapped === false")

        # Rotation to landscape: the stage takes the full height, and comes back to the full width.
        before = page.evaluate("window.speakdraw.layout.relayouts")
        page.set_viewport_size({"width": 664, "height": 390})
        page.wait_for_function("() => window.speakdraw.layout.orientation === 'landscape'")
        page.wait_for_timeout(300)
        land = page.evaluate(BOXES_JS)
        print("landscape", land)
        assert page.evaluate("window.speakdraw.layout.relayouts") > before
        assert land["remote"]["h"] >= 0.95 * land["vh"] and inside_fraction(land["remote"], 664, 390) == 1.0, land
        assert _area(land["self"]) <= 0.30 * _area(land["remote"])
        assert inside_fraction(_box(page, "#stop"), 664, 390) == 1.0
        page.screenshot(path=str(artifacts_dir / "phone-layout-iphone13-landscape.png"))
        page.set_viewport_size({"width": 390, "height": 664})
        page.wait_for_function("() => window.speakdraw.layout.orientation === 'portrait'")
        page.wait_for_timeout(300)
        _check_stage(page.evaluate(BOXES_JS), portrait_phone=True)

        # Full screen for the stage, and out again.
        _tap(page, "#fullscreen")
        page.wait_for_function("() => document.fullscreenElement && document.fullscreenElement.id === 'stage'")
        page.wait_for_timeout(300)
        full = page.evaluate(BOXES_JS)
        assert inside_fraction(full["remote"], full["vw"], full["vh"]) == 1.0
        assert full["remote"]["w"] >= 0.95 * full["vw"]
        assert page.get_attribute("#fullscreen", "aria-pressed") == "true"
        _tap(page, "#fullscreen-exit")
        page.wait_for_function("() => document.fullscreenElement === null")
        _hang_up(page)
    finally:
        context.close()


def test_a_long_status_leaves_the_stage_on_screen(photo_chromium, start_server, artifacts_dir):
    """The server is full: the page says so and retries; the stage stays where it was, then the call plays."""
    server = start_server("--max-sessions", "1")
    first, first_page = open_call_page(photo_chromium, server.base + "/", **DESKTOP)
    phone, page = open_call_page(photo_chromium, server.base + "/", **IPHONE_13)
    try:
        _start_call(first_page)  # takes the only seat
        page.click("#start")
        page.wait_for_function(
            "() => /^the server is full, retrying in \\d+ s$/.test(document.getElementById('status').textContent)",
            timeout=20_000,
        )
        waiting = page.evaluate(BOXES_JS)
        print("server full:", waiting)
        assert inside_fraction(waiting["remote"], waiting["vw"], waiting["vh"]) >= 0.95, waiting
        assert waiting["remote"]["w"] >= 0.9 * waiting["vw"], waiting
        page.screenshot(path=str(artifacts_dir / "phone-layout-server-full.png"))

        # A longer status still (two lines at this width): the stage shrinks a little and stays on screen.
        page.evaluate(
            "document.getElementById('status').textContent = 'reconnecting… (the connection dropped; try 1 of 6 "
            "in 1 s)'"
        )
        long_status = page.evaluate(BOXES_JS)
        assert inside_fraction(long_status["remote"], 390, 664) >= 0.95 and long_status["remote"]["w"] >= 351

        first_page.click("#stop")  # the seat frees: the phone's call comes in by itself
        page.wait_for_function(PLAYING_JS, timeout=40_000)
        page.wait_for_timeout(1000)
        _check_stage(page.evaluate(BOXES_JS), portrait_phone=True)
        _hang_up(page)
    finally:
        phone.close()
        first.close()
