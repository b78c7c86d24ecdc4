"""A model slower than the camera: the shown frame's age stays flat, drops are counted, nothing queues."""

from __future__ import annotations

import math

import pytest

from tests.overload import run_overload


@pytest.mark.slow
async def test_shown_frame_age_stays_bounded_under_overload(start_server):
    server = start_server("--simulate-model-ms", "100")
    # a camera that keeps sending 30 fps (one that follows the `send` hint sends only what the model makes)
    run = await run_overload(server.base, seconds=20.0, fps=30.0, honour_send=False)
    summary = run.summary()
    print(summary)
    first, last = summary["first5s_p95_ms"], summary["last5s_p95_ms"]
    assert not math.isnan(first) and not math.isnan(last), summary
    # flat: no growth over time (a queue would add ~2/3 of a second of age per second here)
    assert last <= first * 1.25 + 60.0, summary
    # bounded: one model slot + encode/decode, not seconds of backlog (a queue would reach ~13 s of age by the end;
    # the margin is for a 2-core machine that other work keeps busy)
    assert summary["age_p95_ms"] < 1000.0, summary
    # the model takes >= 100 ms a frame, so at most ~10 frames/s come out (a hard bound); the rest were
    # dropped at the input and counted. The lower bound only says the call kept moving, whatever the load.
    assert 2.0 <= summary["fps_out"] <= 12.0, summary
    assert summary["fps_in"] >= 2.0 * summary["fps_out"], summary
    assert summary["dropped"] >= 0.5 * 20 * (summary["fps_in"] - summary["fps_out"]), summary
