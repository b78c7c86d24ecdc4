"""Headless Debian Chromium for the browser tests: one place for its path and flags.

Never `playwright install`: Playwright drives the system's /usr/bin/chromium, with fake
camera/mic devices fed from files the tests make.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serverproc import ServerProcess

CHROMIUM = "/usr/bin/chromium"


def require_chromium():
    """Skip the calling module when Chromium or Playwright is missing; return playwright.sync_api."""
    if not Path(CHROMIUM).exists():  # pragma: no cover - depends on the machine
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium", allow_module_level=True)
    return pytest.importorskip("playwright.sync_api")


def launch_chromium(playwright, video: Path | None = None, audio: Path | None = None, https: bool = False):
    args = [
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    if video is not None:
        args.append(f"--use-file-for-fake-video-capture={video}")
    if audio is not None:
        args.append(f"--use-file-for-fake-audio-capture={audio}")
    if https:
        args.append("--ignore-certificate-errors")  # the server's self-signed certificate
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)


def photo_camera(out_dir: Path, *, size: int = 512, fps: int = 15, seconds: float = 1.0) -> Path:
    """A fake camera that shows a real photo (scikit-image's astronaut, a person facing the camera) as a y4m.

    Chromium loops the clip; a still photo is what a person sitting in front of a phone looks like to the
    pipeline, and it makes the screenshots show a face rather than a test pattern.
    """
    import subprocess

    from PIL import Image
    from skimage import data

    png = Path(out_dir) / "photo.png"
    Image.fromarray(data.astronaut()).resize((size, size), Image.BILINEAR).save(png)
    video = Path(out_dir) / "photo.y4m"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-loop", "1", "-i", str(png), "-t", str(seconds),
         "-r", str(fps), "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", str(video)],
        check=True,
    )  # fmt: skip
    return video


# Phones and a desktop, in CSS pixels (device emulation: touch, mobile viewport).
IPHONE_13 = {"viewport": {"width": 390, "height": 664}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
PIXEL_7 = {"viewport": {"width": 412, "height": 839}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}

PLAYING_JS = (
    "() => { const v = document.getElementById('remote-video'); return v.videoWidth > 0 && v.currentTime > 0; }"
)

# Where the call's boxes lie, in CSS px of the viewport as it is (no scrolling done).
BOXES_JS = """() => {
  const box = (id) => { const el = document.getElementById(id); if (!el) return null;
    const r = el.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; };
  const v = document.getElementById('remote-video');
  return {vw: innerWidth, vh: innerHeight, scrollY, remote: box('remote-video'), self: box('local-video'),
          stage: box('stage'), videoAspect: v.videoWidth ? v.videoWidth / v.videoHeight : null,
          status: document.getElementById('status').textContent};
}"""


def inside_fraction(box: dict, vw: float, vh: float) -> float:
    """How much of `box` lies inside the viewport [0, vw] x [0, vh]."""
    w = max(0.0, min(box["x"] + box["w"], vw) - max(box["x"], 0.0))
    h = max(0.0, min(box["y"] + box["h"], vh) - max(box["y"], 0.0))
    return (w * h) / (box["w"] * box["h"]) if box["w"] and box["h"] else 0.0


def open_call_page(browser, url: str, **context_args):
    """A new context and page on `url`, waiting for the page to offer a call."""
    context = browser.new_context(**context_args)
    page = context.new_page()
    page.on("console", lambda msg: print(f"[browser {msg.type}] {msg.text}"))
    page.on("pageerror", lambda err: print(f"[browser pageerror] {err}"))
    page.goto(url)
    page.wait_for_selector("#start:not([disabled])", timeout=20_000)
    return context, page


def offline_default_server(folder: Path) -> ServerProcess:
    """`speakdraw serve` with its default engine where sd-turbo cannot be had (no weights, no hub): the style
    engine serves and the server says why, as a person running the default command offline sees it. No speech,
    no matting (start-up in seconds). `--min-fps 0`: the style engine paints under the default 8 fps floor on
    a 2-core CPU (about 1 fps at 512² on this loaded machine), so once it has measured itself the server would
    turn every call after the first away as full; these tests hold one call at a time.
    """
    env = {
        "HF_HUB_OFFLINE": "1",
        "SPEAKDRAW_OFFLINE": "1",
        "SPEAKDRAW_HOME": str(folder / "empty-home"),
        "HF_HOME": str(folder / "empty-hf"),
        "SPEAKDRAW_SD_TURBO_PATH": "",
    }
    server = ServerProcess("--min-fps", "0", engine="sd-turbo", log_path=folder / "server.log", env=env)
    server.wait_ready(timeout=120)
    return server
