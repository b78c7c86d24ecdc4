"""The call's speech track reader (server/call_speech.py) without a model: failure handling and stats."""

from __future__ import annotations

import asyncio
import fractions
import types

import numpy as np
import pytest
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from av import AudioFrame

from server.call_speech import AudioListener


def frame(i: int) -> AudioFrame:
    f = AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), format="s16", layout="mono")
    f.sample_rate, f.pts, f.time_base = 48000, i * 960, fractions.Fraction(1, 48000)
    return f


class Exploding:
    """A transcriber whose feed raises (a bug, a broken model): the consumer fails on frame 3."""

    stats = {"dropped_s": 0.0}

    def __init__(self) -> None:
        self.fed = 0

    def feed(self, pcm) -> None:
        self.fed += 1
        if self.fed == 3:
            raise RuntimeError("consumer broke")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


async def test_a_failing_consumer_switches_to_draining_and_the_queue_stays_bounded():
    """Issue 14 row 8: before, the listener stopped reading and aiortc's queue grew without bound."""
    track = RemoteStreamTrack(kind="audio")
    listener = AudioListener(track, Exploding())
    listener.start()
    most_queued = 0
    for i in range(3000):  # 60 s of 20 ms frames, pushed as fast as the loop takes them
        track._queue.put_nowait(frame(i))
        if i % 50 == 0:
            await asyncio.sleep(0)
            most_queued = max(most_queued, track._queue.qsize())
    await asyncio.sleep(0.05)
    assert listener.failed
    assert track._queue.qsize() == 0 and most_queued <= 51  # everything was read, nothing piled up
    assert listener.frames == 3000
    track._queue.put_nowait(None)  # the track ends: the drain ends with it
    await asyncio.wait_for(listener._task, 5)
    await listener.stop()


async def test_listener_reports_dropped_audio_once_per_interval():
    sent: list[dict] = []

    class Behind(Exploding):
        def feed(self, pcm) -> None:
            self.stats["dropped_s"] += 0.02

    class Counter:
        dropped = 0.0

        def speech_dropped(self, seconds: float) -> None:
            self.dropped += seconds

    observer = Counter()
    track = RemoteStreamTrack(kind="audio")
    behind = Behind()
    behind.stats = {"dropped_s": 0.0}
    listener = AudioListener(track, behind, observer=observer, notify=sent.append)
    listener.start()
    for i in range(100):
        track._queue.put_nowait(frame(i))
    track._queue.put_nowait(None)
    await asyncio.wait_for(listener._task, 5)
    assert observer.dropped == pytest.approx(2.0)
    assert [m["code"] for m in sent] == ["speech_dropped"]  # told once, not 100 times
    assert listener.speech_stats()["speech_dropped_s"] == pytest.approx(2.0)
    await listener.stop()


async def test_a_finals_stage_times_reach_stats_and_metrics():
    """Issue 16: per-final stages (eos, wait, decode from the speech thread; send here) → stats + /metrics."""
    import time

    from server.metrics import Metrics
    from speakdraw.speech import TranscriptEvent

    metrics = Metrics()
    sent: list[dict] = []
    listener = AudioListener(RemoteStreamTrack(kind="audio"), None, sent.append, observer=metrics)
    listener._loop = asyncio.get_running_loop()
    stages = {"eos": 290.0, "wait": 3.0, "decode": 120.0}
    first = TranscriptEvent(0, "a red house", True, latency_s=0.45, stages=stages, emitted_at=time.monotonic())
    listener.deliver(first)
    listener.deliver(TranscriptEvent(0, "a red horse", True, revision=1, stages={"decode": 600.0}))  # a correction
    await asyncio.sleep(0.05)
    assert [m.text for m in sent] == ["a red house", "a red horse"]
    speech_ms = listener.speech_stats()["speech_ms"]
    assert set(speech_ms) == {"eos", "wait", "decode", "send", "total"}
    assert speech_ms["decode"] == 120.0 and speech_ms["total"] >= 450.0  # the first final's, not the correction's
    text = metrics.render().decode()
    for stage in ("eos", "wait", "decode", "send", "total"):
        assert f'speakdraw_speech_latency_seconds_count{{stage="{stage}"}} 1.0' in text
    assert sent[1].message()["revised"] is True and "revised" not in sent[0].message()


async def test_the_app_owns_the_speech_thread_and_stops_it_on_shutdown(stt):
    """Issue 10: no module-level speech worker; the app creates one and its cleanup joins it."""
    import threading

    from aiohttp.test_utils import TestServer

    from server.app import create_app
    from server.config import ServerConfig
    from server.state import LOAD_TASK, STATE

    config = ServerConfig(engine="passthrough", matting="off", stt="faster-whisper", port=0, https_port=0)
    app = create_app(config)
    server = TestServer(app)
    await server.start_server()
    try:
        await asyncio.wait_for(app[LOAD_TASK], 120)
        factory = app[STATE].speech_factory
        assert factory is not None and factory.worker is not None
        caller = types.SimpleNamespace(send=lambda message: None)  # what a listener needs of a session
        factory.worker.submit(factory(caller, RemoteStreamTrack(kind="audio")).transcriber)  # start its thread
        await asyncio.sleep(0.1)
        assert factory.worker.alive
    finally:
        await server.close()
    assert not factory.worker.alive
    assert not [t.name for t in threading.enumerate() if t.name == factory.worker.name]
