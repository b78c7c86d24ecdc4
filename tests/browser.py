"""Headless Debian Chromium for the browser tests: one place for its path and flags.

Never `playwright install`: Playwright drives the system's /usr/bin/chromium, with fake
camera/mic devices fed from files the tests make.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
