"""The server's warnings as plain sentences for the call page (server/notices.py), next to `warnings` in
/api/settings `server.notices`; the technical text stays the notice's detail."""

from __future__ import annotations

import pytest

from server.notices import notices, summarize
from speakdraw.engines import EngineOptions, load_engine


def test_the_real_offline_fallback_warning_reads_as_one_plain_sentence(tmp_path, monkeypatch):
    """The warning the default command gives offline (sd-turbo not downloaded, style engine serving)."""
    monkeypatch.setenv("SPEAKDRAW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPEAKDRAW_SD_TURBO_PATH", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine, warnings = load_engine(EngineOptions(engine="sd-turbo", device="cpu"))
    assert engine.name == "style" and len(warnings) == 1
    [notice] = notices(warnings)
    assert notice == {
        "summary": "Running the offline style painter: the diffusion model isn't downloaded",
        "detail": warnings[0],
    }
    assert "--engine" not in notice["summary"] and "speakdraw models pull" in notice["detail"]


@pytest.mark.parametrize(
    ("warning", "summary"),
    [
        (
            "engine 'sd-turbo' unavailable, serving passthrough: --device cuda was asked for but torch sees no "
            "CUDA GPU; use --device cpu or auto",
            "Running without a painter (your camera picture comes back unchanged): the diffusion model needs a "
            "graphics card this machine doesn't have",
        ),
        (
            "fallback engine 'style' unavailable too: onnxruntime is not installed (No module named "
            "'onnxruntime'); pip install onnxruntime",
            "The offline style painter can't run here either: a package the offline style painter needs isn't "
            "installed",
        ),
        (
            "engine 'tiny' failed to load (RuntimeError: boom); serving passthrough",
            "Running without a painter (your camera picture comes back unchanged): the small diffusion model "
            "couldn't be loaded",
        ),
        (
            "matting unavailable, 'human' mode repaints the whole frame: no onnx",
            "Background separation is off: 'human' mode paints the whole picture",
        ),
        (
            "speech-to-text unavailable, the call audio is not transcribed: no weights",
            "Speech recognition is off: type your prompt instead of saying it",
        ),
        (
            "warm-up of style failed (OOM); the first frames may be slow",
            "The first painted frames may be slow: the painter's warm-up failed",
        ),
        ("something new went wrong", "The server reported a problem"),
    ],
)
def test_each_kind_of_warning_has_its_sentence(warning, summary):
    assert summarize(warning) == summary


def test_a_repeated_warning_is_one_notice_and_order_is_kept():
    warnings = ["speech-to-text unavailable, a", "matting unavailable, b", "speech-to-text unavailable, a"]
    assert [n["detail"] for n in notices(warnings)] == warnings[:2]
