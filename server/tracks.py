"""The video path of one call: camera track → its slot at the device runner → TransformedVideoTrack.

The event loop only moves frames between slots; conversion and model work run on the
device runner's thread (server/device_runner.py), batched with the other calls. When the
device is slower than the camera, frames are dropped at the input (counted), never queued.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from server.device_runner import CallSlot, DeviceRunner, Processed
from server.mailbox import Mailbox
from speakdraw.pipeline import Pipeline

log = logging.getLogger(__name__)

# While a call's frames fail, its sender gets the last good frame again this often: the browser's
# video keeps moving (a receiver that gets nothing shows a frozen or black picture) until frames flow.
REPEAT_LAST_S = 0.25


@dataclass
class OutFrame:
    """A processed frame on its way out. `frame` belongs to the call's own sender: its encoder converts it with the
    frame's one (not thread-safe) colour converter, so other readers (MJPEG, WHEP viewers) use `rgb`, read-only."""

    frame: VideoFrame
    arrived: float
    started: float
    done: float
    timings_ms: dict[str, float]
    rgb: np.ndarray | None = None


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
    last_batch: int = 0  # how many calls shared the device step of the newest frame
    last_transit_ms: float = 0.0  # the newest frame's wait before it reached us (TransitDelay)


class VideoObserver(Protocol):
    """Per-frame hooks (metrics). Called on the event loop: each call must be cheap and never block."""

    def frame_in(self, dropped: bool) -> None:
        """A camera frame arrived; `dropped`: it replaced an unprocessed one in the inbox."""

    def frame_processed(self, timings_ms: dict[str, float]) -> None: ...

    def frame_failed(self) -> None: ...

    def frame_handed(self) -> None:
        """A transformed frame was handed to the sender (counted now: the last one of a call is sent, but the
        sender never comes back after it)."""

    def frame_sent(self, encode_ms: float, total_ms: float) -> None:
        """The sender came back for the next frame: `encode_ms` it spent encoding+sending the last one,
        `total_ms` from that frame's arrival at the server until then."""


class TransitDelay:
    """How long frames waited before reaching us, beyond the least wait seen lately (so clock offsets
    cancel): arrival time minus the frame's capture time (its pts), against the smallest such value of
    the last two `window_s` windows. It grows when packets queue in the kernel or behind a busy event
    loop, which no measurement after the read can see."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._window_start: float | None = None
        self._current = float("inf")
        self._previous = float("inf")
        self.last_ms = 0.0

    def frame(self, pts_s: float | None, arrived: float) -> float:
        if pts_s is None:
            return 0.0
        transit = arrived - pts_s
        if self._window_start is None or arrived - self._window_start > self.window_s:
            self._previous, self._current, self._window_start = self._current, transit, arrived
        self._current = min(self._current, transit)
        self.last_ms = max(0.0, (transit - min(self._current, self._previous)) * 1000.0)
        return self.last_ms


class FrameOutcomes(Protocol):
    """Told of every processed frame, on the event loop (server/faults.py)."""

    def frame_ok(self) -> None: ...

    def frame_failed(self, error: BaseException) -> None: ...


class FrameRelay:
    """A call's video, relayed (the device runner does the processing): the reader task offers each
    camera frame to the runner (newest wins), and the runner's results come back on the loop into the
    outbox the sender reads."""

    def __init__(
        self,
        source: MediaStreamTrack,
        pipeline: Pipeline,
        runner: DeviceRunner,
        observer: VideoObserver | None = None,
        faults: FrameOutcomes | None = None,
    ) -> None:
        self.source = source
        self.observer = observer
        self.pipeline = pipeline
        self.runner = runner
        self.faults = faults  # the session's fault handler (status to the caller, fallback)
        self.slot: CallSlot | None = None
        self.outbox: Mailbox[OutFrame] = Mailbox()
        self.stats = VideoStats()
        self.max_fps: float | None = None  # set when this sender ignores the `send` hint: excess frames are dropped
        self.limited = 0  # frames dropped by that limit
        self._last_taken = 0.0
        self.transit = TransitDelay()
        self._task: asyncio.Task | None = None
        self.ended = asyncio.Event()  # the camera track ended (or failed)
        self.failing = False  # the newest processed frame failed (the sender repeats the last good one)
        self.repeated = 0  # frames the sender repeated meanwhile

    @property
    def dropped(self) -> int:
        return (self.slot.dropped if self.slot is not None else 0) + self.limited

    def start(self) -> None:
        self.slot = self.runner.register(self.pipeline, self._on_result)
        self._task = asyncio.create_task(self._read(), name="speakdraw-video-read")

    def _over_limit(self, now: float) -> bool:
        if self.max_fps is None:
            return False
        if now - self._last_taken < 0.9 / self.max_fps:
            self.limited += 1
            return True
        self._last_taken = now
        return False

    async def _read(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                now = time.monotonic()
                self.stats.frames_in += 1
                self.stats.fps_in.tick(now)
                if self._over_limit(now):
                    if self.observer is not None:
                        self.observer.frame_in(True)
                    continue
                assert self.slot is not None
                pts_s = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
                self.stats.last_transit_ms = self.transit.frame(pts_s, now)
                replaced = self.slot.put(frame, now)
                if self.observer is not None:
                    self.observer.frame_in(replaced)
        except MediaStreamError:
            pass
        except Exception:  # anything else ends this track's reading: the session hears of it via `ended`
            log.exception("video reader failed")
        finally:
            self.ended.set()

    def _on_result(self, result: Processed) -> None:
        """On the event loop, from the runner."""
        # how long the frame waited (queued before us + in the inbox); the step itself is not waiting
        age_ms = self.stats.last_transit_ms + (result.started - result.arrived) * 1000.0
        self.runner.capacity.frame_age(age_ms, call=id(self))
        if result.error is not None or result.frame is None:
            self.failing = True
            self.stats.errors += 1
            if self.observer is not None:
                self.observer.frame_failed()
            if self.faults is not None and result.error is not None:
                self.faults.frame_failed(result.error)
            return
        self.failing = False
        if self.faults is not None:
            self.faults.frame_ok()
        self.stats.frames_processed += 1
        self.stats.last_timings_ms = result.timings_ms
        self.stats.last_queue_age_ms = (result.started - result.arrived) * 1000.0
        self.stats.last_batch = result.batch
        if self.observer is not None:
            self.observer.frame_processed(result.timings_ms)
        self.outbox.put(
            OutFrame(result.frame, result.arrived, result.started, result.done, result.timings_ms, result.rgb)
        )

    async def stop(self) -> None:
        if self.slot is not None:
            self.slot.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.ended.set()


class TransformedVideoTrack(MediaStreamTrack):
    """The track sent back to the browser: each recv() hands out the newest processed frame (while this
    call's frames fail, the last good one again every `REPEAT_LAST_S`, so the picture never stalls)."""

    kind = "video"

    def __init__(self, relay: FrameRelay) -> None:
        super().__init__()
        self.relay = relay
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
            self.relay.stats.last_encode_ms = encode_ms
            if self.relay.observer is not None:
                self.relay.observer.frame_sent(encode_ms, (now - self.last.arrived) * 1000.0)
        self._handed_at = None
        out, repeat = await self._next()
        frame = out.frame
        if repeat and self._last_pts is not None and frame.time_base:
            frame.pts = self._last_pts + max(1, int(REPEAT_LAST_S / frame.time_base))
        elif self._last_pts is not None and frame.pts is not None and frame.pts <= self._last_pts:
            frame.pts = self._last_pts + 1  # the encoder needs increasing pts
        self._last_pts = frame.pts
        stats = self.relay.stats
        now = time.monotonic()
        stats.frames_out += 1
        if self.relay.observer is not None:
            self.relay.observer.frame_handed()
        stats.fps_out.tick(now)
        stats.last_shown_age_ms = (now - out.arrived) * 1000.0
        self.last = out
        self._handed_at = now
        for listener in self.listeners:
            listener(out)
        return frame

    async def _next(self) -> tuple[OutFrame, bool]:
        """The next processed frame, or (while this call's frames fail) the last good one again."""
        outbox = self.relay.outbox
        while True:
            if self.last is None:
                return await outbox.get(), False
            try:
                return await asyncio.wait_for(outbox.get(), REPEAT_LAST_S), False
            except asyncio.TimeoutError:
                if self.relay.failing:
                    self.relay.repeated += 1
                    return self.last, True
