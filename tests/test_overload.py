"""A model slower than the camera: the shown frame's age stays flat, drops are counted, nothing queues."""

from __future__ import annotations

import math

import pytest

from tests.overload import run_overload


@pytest.mark.slow
async def test_shown_frame_age_stays_bounded_under_overload(start_server):
    server = start_server("--simulate-model-ms", "100")
    run = await run_overload(server.base, seconds=20.0, fps=30.0)
    summary = run.summary()
    print(summary)
    first, last = summary["first5s_p95_ms"], summary["last5s_p95_ms"]
    assert not math.isnan(first) and not math.isnan(last), summary
    # flat: no growth over time (a queue would add ~2/3 of a second of age per second here)
    assert last <= first * 1.25 + 60.0, summary
    # bounded: one model slot + encode/decode, not seconds of backlog
    assert summary["age_p95_ms"] < 600.0, summary
    # the model runs ~10 frames/s; the rest were dropped at the input and counted
    assert 5.0 <= summary["fps_out"] <= 12.0, summary
    assert summary["fps_in"] >= 20.0, summary
    assert summary["dropped"] >= 0.5 * 20 * (summary["fps_in"] - summary["fps_out"]), summary
