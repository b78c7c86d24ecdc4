"""A session's output as plain JPEG over HTTP, for OBS, a second screen or a script.

- `GET /api/sessions/{id}/stream.mjpg[?fps=N]`: `multipart/x-mixed-replace` stream, one part per output
  frame (so paced to the output rate; `fps` caps it lower). Any number of viewers.
- `GET /api/sessions/{id}/snapshot.jpg`: the newest output frame as one JPEG.

Latency rules kept here: each output frame is encoded once, in a small JPEG thread pool of its own (never the
video worker, never the event loop), and only while someone watches; all viewers share the bytes. A viewer
always gets the newest encoded frame: one that reads slowly simply skips frames, so at most one part plus
the socket's write buffer is ever held for it, and it cannot slow the call or the other viewers.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np
from aiohttp import web
from av import VideoFrame
from PIL import Image

from server.errors import json_error
from server.mailbox import Mailbox
from server.metrics import METRICS, Metrics
from server.session import Session
from server.state import STATE
from server.tracks import OutFrame

log = logging.getLogger(__name__)

JPEG_QUALITY = 85
BOUNDARY = "speakdrawframe"
MAX_FPS = 60.0
SNAPSHOT_WAIT_S = 3.0  # a snapshot asked for right after the call starts waits this long for a first frame


def encode_jpeg(frame: VideoFrame | np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """Runs in the JPEG pool: RGB (or a frame, converted) → JPEG bytes."""
    rgb: np.ndarray = frame if isinstance(frame, np.ndarray) else frame.to_ndarray(format="rgb24")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def pixels_of(out: OutFrame) -> VideoFrame | np.ndarray:
    """Its RGB when it has them: the frame itself is the call's sender's, whose encoder may be converting it in
    another thread with the frame's one colour converter (server/tracks.py `OutFrame`)."""
    return out.rgb if out.rgb is not None else out.frame


def part(jpeg: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
    return head + jpeg + b"\r\n"


class _Viewer:
    """One open stream: its socket, and whether its handler is blocked writing to it."""

    __slots__ = ("transport", "writing")

    def __init__(self, request: web.Request) -> None:
        self.transport = request.transport
        self.writing = False


class JpegFeed:
    """One session's output frames as JPEG, encoded once per frame while watched, shared by every viewer."""

    def __init__(
        self,
        session: Session,
        executor: Executor,
        metrics: Metrics | None = None,
        on_closed: Callable[[JpegFeed], None] | None = None,
    ) -> None:
        assert session.output_track is not None
        self.session = session
        self._on_closed = on_closed
        self.track = session.output_track
        self.executor = executor
        self.metrics = metrics
        self.jpeg: bytes | None = None
        self.seq = 0  # bumps once per published JPEG
        self.closed = False
        self._source: OutFrame | None = None  # the frame self.jpeg was made from
        self._inbox: Mailbox[OutFrame] = Mailbox()  # the newest frame not yet encoded
        self._changed = asyncio.Condition()
        self._viewers: set[_Viewer] = set()
        self.track.listeners.append(self._on_frame)
        self._tasks = [asyncio.create_task(self._encode_loop()), asyncio.create_task(self._watch_session())]

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def _on_frame(self, out: OutFrame) -> None:
        """Track listener, on the event loop: only remember the newest frame."""
        if self._viewers:
            self._inbox.put(out)

    async def _encode(self, out: OutFrame) -> bytes:
        jpeg = await asyncio.get_running_loop().run_in_executor(self.executor, encode_jpeg, pixels_of(out))
        if self.metrics is not None:
            self.metrics.mjpeg_frames.inc()
        return jpeg

    async def _encode_loop(self) -> None:
        while True:
            out = await self._inbox.get()
            if out is self._source:
                continue
            try:
                jpeg = await self._encode(out)
            except Exception:
                log.exception("JPEG encoding failed; skipping the frame")
                continue
            await self._publish(out, jpeg)

    async def _publish(self, out: OutFrame, jpeg: bytes) -> None:
        async with self._changed:
            self._source, self.jpeg = out, jpeg
            self.seq += 1
            self._changed.notify_all()

    async def _watch_session(self) -> None:
        await self.session.closed.wait()
        await self.close()

    async def next(self, after: int) -> tuple[int, bytes] | None:
        """The newest JPEG newer than `after` (waits for it); None once the feed is closed."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.closed or self.seq > after)
            if self.closed:
                return None
            assert self.jpeg is not None
            return self.seq, self.jpeg

    async def snapshot(self) -> bytes | None:
        """The newest output frame as JPEG (reusing the stream's encode when it is of that frame)."""
        deadline = time.monotonic() + SNAPSHOT_WAIT_S
        while self.track.last is None and not self.closed:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)
        out = self.track.last
        if out is None:
            return None
        if out is self._source and self.jpeg is not None:
            return self.jpeg
        return await self._encode(out)

    async def serve(self, request: web.Request, min_interval: float) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
                "Pragma": "no-cache",
                "X-Accel-Buffering": "no",  # nginx in front: do not buffer a live stream
            }
        )
        await response.prepare(request)
        viewer = _Viewer(request)
        self._viewers.add(viewer)
        if self.metrics is not None:
            self.metrics.mjpeg_viewers.inc()
        seq = 0
        try:
            # Start with the newest frame already encoded (if fresh), then one part per new frame.
            if self.jpeg is not None and self._source is self.track.last:
                seq = self.seq - 1
            while True:
                got = await self.next(seq)
                if got is None:
                    break
                seq, jpeg = got
                sent = time.monotonic()
                viewer.writing = True
                await response.write(part(jpeg))  # waits while the socket is full: this viewer skips frames
                viewer.writing = False
                if min_interval:
                    await asyncio.sleep(max(0.0, min_interval - (time.monotonic() - sent)))
            viewer.writing = True
            await response.write(f"--{BOUNDARY}--\r\n".encode())
            await response.write_eof()
        except (ConnectionError, RuntimeError):  # the viewer went away (aiohttp raises one or the other)
            pass
        finally:
            self._viewers.discard(viewer)
            if self.metrics is not None:
                self.metrics.mjpeg_viewers.dec()
        return response

    async def close(self) -> None:
        """Session over or server stopping: end every stream; abort those stuck on a full socket."""
        if self.closed:
            return
        self.closed = True
        if self._on_closed is not None:
            self._on_closed(self)
        if self._on_frame in self.track.listeners:
            self.track.listeners.remove(self._on_frame)
        async with self._changed:
            self._changed.notify_all()
        for viewer in list(self._viewers):
            if viewer.writing and viewer.transport is not None:
                viewer.transport.abort()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()


class MjpegState:
    """The app's feeds (one per watched session) and the JPEG thread they share (`workers.jpeg`)."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.feeds: dict[str, JpegFeed] = {}

    def feed(self, session: Session, metrics: Metrics | None = None) -> JpegFeed:
        feed = self.feeds.get(session.id)
        if feed is None or feed.closed:
            feed = JpegFeed(session, self.executor, metrics, on_closed=self._forget)
            self.feeds[session.id] = feed
        return feed

    def _forget(self, feed: JpegFeed) -> None:
        if self.feeds.get(feed.session.id) is feed:
            del self.feeds[feed.session.id]


MJPEG = web.AppKey("mjpeg", MjpegState)


def _feed_or_error(request: web.Request) -> JpegFeed | web.Response:
    state = request.app[STATE]
    session = state.sessions.get(request.match_info["id"])
    if session is None:
        return json_error(404, "unknown_session", "no such session")
    if session.output_track is None or session.closed.is_set():
        return json_error(409, "no_video", "this session has no output video (yet)")
    return request.app[MJPEG].feed(session, request.app[METRICS])


async def stream(request: web.Request) -> web.StreamResponse:
    fps_arg = request.query.get("fps")
    min_interval = 0.0
    if fps_arg is not None:
        try:
            fps = float(fps_arg)
        except ValueError:
            fps = -1.0
        if not 0 < fps <= MAX_FPS:
            return json_error(400, "invalid_fps", f"fps must be a number in (0, {MAX_FPS:g}]")
        min_interval = 1.0 / fps
    feed = _feed_or_error(request)
    if isinstance(feed, web.Response):
        return feed
    return await feed.serve(request, min_interval)


async def snapshot(request: web.Request) -> web.Response:
    feed = _feed_or_error(request)
    if isinstance(feed, web.Response):
        return feed
    jpeg = await feed.snapshot()
    if jpeg is None:
        return json_error(503, "no_frame", "no output frame yet; try again", headers={"Retry-After": "1"})
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def _close_feeds(app: web.Application) -> None:
    state = app[MJPEG]
    await asyncio.gather(*(feed.close() for feed in list(state.feeds.values())), return_exceptions=True)


def setup(app: web.Application) -> MjpegState:
    """Register the routes; streams end on server shutdown (before aiohttp waits for open handlers)."""
    state = MjpegState(app[STATE].workers.jpeg)
    app[MJPEG] = state
    app.router.add_get("/api/sessions/{id}/stream.mjpg", stream)
    app.router.add_get("/api/sessions/{id}/snapshot.jpg", snapshot)
    app.on_shutdown.append(_close_feeds)
    return state
