"""The video path of one call: camera track → 1-slot mailbox → worker thread → TransformedVideoTrack.

The event loop only moves frames between slots; conversion and model work run in the
device's worker thread. When the model is slower than the camera, frames are dropped at
the input (counted), never queued.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from speakdraw.pipeline import Pipeline

log = logging.getLogger(__name__)
T = TypeVar("T")


class Mailbox(Generic[T]):
    """One slot: a put replaces what is there (counted as dropped); get waits for the next item."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._event = asyncio.Event()
        self.dropped = 0

    def put(self, item: T) -> None:
        if self._item is not None:
            self.dropped += 1
        self._item = item
        self._event.set()

    async def get(self) -> T:
        await self._event.wait()
        item, self._item = self._item, None
        self._event.clear()
        assert item is not None
        return item


@dataclass
class InFrame:
    frame: VideoFrame
    arrived: float  # time.monotonic() when the reader took it off the track


@dataclass
class OutFrame:
    frame: VideoFrame
    arrived: float
    started: float
    done: float
    timings_ms: dict[str, float]


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def rate(self) -> float:
        now = time.monotonic()
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], 1e-6)
        return (len(self._times) - 1) / span


@dataclass
class VideoStats:
    frames_in: int = 0
    frames_processed: int = 0
    frames_out: int = 0
    errors: int = 0
    fps_in: RateMeter = field(default_factory=RateMeter)
    fps_out: RateMeter = field(default_factory=RateMeter)
    last_timings_ms: dict[str, float] = field(default_factory=lambda: {"matte": 0.0, "diffuse": 0.0, "total": 0.0})
    last_queue_age_ms: float = 0.0
    last_shown_age_ms: float = 0.0
    last_encode_ms: float = 0.0  # the WebRTC sender's encode+send time of the previous frame


class VideoObserver(Protocol):
    """Per-frame hooks (metrics). Called on the event loop: each call must be cheap and never block."""

    def frame_in(self, dropped: bool) -> None:
        """A camera frame arrived; `dropped`: it replaced an unprocessed one in the inbox."""

    def frame_processed(self, timings_ms: dict[str, float]) -> None: ...

    def frame_failed(self) -> None: ...

    def frame_sent(self, encode_ms: float, total_ms: float) -> None:
        """The sender came back for the next frame: `encode_ms` it spent encoding+sending the last one,
        `total_ms` from that frame's arrival at the server until then."""


def _transform(pipeline: Pipeline, frame: VideoFrame) -> tuple[VideoFrame, dict[str, float]]:
    """Runs in the worker thread: decode to RGB, run the pipeline, wrap as a frame with the source pts."""
    start = time.perf_counter()
    rgb = frame.to_ndarray(format="rgb24")
    out: np.ndarray = pipeline.process(rgb)
    result = VideoFrame.from_ndarray(np.ascontiguousarray(out), format="rgb24")
    result.pts, result.time_base = frame.pts, frame.time_base
    timings = dict(pipeline.last_timings_ms)
    timings["total"] = (time.perf_counter() - start) * 1000.0
    return result, timings


class VideoProcessor:
    """Owns the two tasks of a call's video: reading the camera, and feeding the worker."""

    def __init__(
        self, source: MediaStreamTrack, pipeline: Pipeline, executor: Executor, observer: VideoObserver | None = None
    ) -> None:
        self.source = source
        self.observer = observer
        self.pipeline = pipeline
        self.executor = executor
        self.inbox: Mailbox[InFrame] = Mailbox()
        self.outbox: Mailbox[OutFrame] = Mailbox()
        self.stats = VideoStats()
        self._tasks: list[asyncio.Task] = []
        self.ended = asyncio.Event()

    @property
    def dropped(self) -> int:
        return self.inbox.dropped

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._read(), name="speakdraw-video-read"),
            asyncio.create_task(self._work(), name="speakdraw-video-work"),
        ]

    async def _read(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                now = time.monotonic()
                self.stats.frames_in += 1
                self.stats.fps_in.tick(now)
                dropped_before = self.inbox.dropped
                self.inbox.put(InFrame(frame, now))
                if self.observer is not None:
                    self.observer.frame_in(self.inbox.dropped > dropped_before)
        except MediaStreamError:
            pass
        finally:
            self.ended.set()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self.inbox.get()
            started = time.monotonic()
            try:
                frame, timings = await loop.run_in_executor(self.executor, _transform, self.pipeline, item.frame)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.errors += 1
                if self.observer is not None:
                    self.observer.frame_failed()
                log.exception("pipeline failed on a frame; skipping it")
                continue
            self.stats.frames_processed += 1
            self.stats.last_timings_ms = timings
            self.stats.last_queue_age_ms = (started - item.arrived) * 1000.0
            if self.observer is not None:
                self.observer.frame_processed(timings)
            self.outbox.put(OutFrame(frame, item.arrived, started, time.monotonic(), timings))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.ended.set()


class TransformedVideoTrack(MediaStreamTrack):
    """The track sent back to the browser: each recv() hands out the newest processed frame."""

    kind = "video"

    def __init__(self, processor: VideoProcessor) -> None:
        super().__init__()
        self.processor = processor
        self.last: OutFrame | None = None
        self._last_pts: int | None = None
        self._handed_at: float | None = None
        # Called with each OutFrame as it is handed to the sender (MJPEG feeds); must be cheap.
        self.listeners: list[Callable[[OutFrame], None]] = []

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._handed_at is not None and self.last is not None:
            # aiortc's sender encodes and sends the previous frame, then calls recv() again.
            now = time.monotonic()
            encode_ms = (now - self._handed_at) * 1000.0
            self.processor.stats.last_encode_ms = encode_ms
            if self.processor.observer is not None:
                self.processor.observer.frame_sent(encode_ms, (now - self.last.arrived) * 1000.0)
        self._handed_at = None
        out = await self.processor.outbox.get()
        frame = out.frame
        if self._last_pts is not None and frame.pts is not None and frame.pts <= self._last_pts:
            frame.pts = self._last_pts + 1  # the encoder needs increasing pts
        self._last_pts = frame.pts
        stats = self.processor.stats
        now = time.monotonic()
        stats.frames_out += 1
        stats.fps_out.tick(now)
        stats.last_shown_age_ms = (now - out.arrived) * 1000.0
        self.last = out
        self._handed_at = now
        for listener in self.listeners:
            listener(out)
        return frame
