"""An aiortc test client: sends synthetic video carrying a frame id, receives the transformed track.

Each sent frame has a known pattern (coloured quadrants) and its id written as 16 black/white
blocks along the top, so a received frame can be matched to the one that was sent (round trip),
even when the server inverted it or worked it at a smaller size.

How it compares with a browser on a phone or laptop (the load it puts on this machine):
- like a browser, it encodes every frame it sends (aiortc's libvpx/libx264, software, in the loop's
  executor) at the rate and size the server's `send` hint asks for (`maxFramerate`,
  `scaleResolutionDownBy`), and decodes every frame it receives (aiortc's decoder thread);
- with `render=True` (the default) it also shows frames as a browser does: a renderer of its own (one
  thread per caller, like a compositor) converts the newest decoded frame to RGB whenever it is free; a
  frame decoded while it is busy is replaced by the next one (a browser renders the newest frame at
  each refresh and never queues decoded frames). `frames_received` counts frames shown, `frames_decoded`
  all of them;
- lighter than a browser: no camera capture, no display or compositing, no playout delay in a
  jitter buffer (in tests, the server's marker jitter buffer, which tests/conftest.py puts in place: a
  frame is handed on when its last packet arrives; bench/ scripts run on stock aiortc, which holds a frame
  until the next one's first packet, one frame interval more), no audio processing;
- heavier than many browsers: every caller of a test runs in one Python process (one GIL, one
  event loop) on the server's own cores, and decodes in software where phones use hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame
from PIL import Image

ID_BITS = 16
CALLER_BITS = 3
COUNT_BITS = ID_BITS - CALLER_BITS
BLOCK = 32
QUADRANT_COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [220, 220, 60]], dtype=np.uint8)


def pattern_frame(frame_id: int, width: int = 512, height: int = 512, scale: float = 1.0) -> np.ndarray:
    """Quadrants of known colours; top row: the id's 16 bits as black/white blocks. `scale` < 1: the same
    picture made smaller (a camera scaled down by the server's `send.max_side`), blocks included."""
    width, height = max(16, round(width * scale)), max(16, round(height * scale))
    img = np.empty((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    img[:h2, :w2], img[:h2, w2:], img[h2:, :w2], img[h2:, w2:] = QUADRANT_COLOURS
    block = max(1, round(BLOCK * scale))
    for bit in range(ID_BITS):
        value = 255 if (frame_id >> bit) & 1 else 0
        img[:block, round(bit * BLOCK * scale) : round((bit + 1) * BLOCK * scale)] = value
    return img


def read_frame_id(img: np.ndarray, inverted: bool = False, sent_width: int = 512) -> int:
    """The id of a received frame; one smaller than `sent_width` (worked at a smaller size) is read to scale."""
    s = img.shape[1] / sent_width
    frame_id = 0
    for bit in range(ID_BITS):
        x0, x1 = round((bit * BLOCK + 4) * s), round(((bit + 1) * BLOCK - 4) * s)
        cell = img[round(4 * s) : round((BLOCK - 4) * s), x0:x1]
        bright = cell.mean() > 127
        if bright != inverted:
            frame_id |= 1 << bit
    return frame_id


def quadrant_means(img: np.ndarray) -> np.ndarray:
    """Mean colour of the centre of each quadrant (away from the id row and edges)."""
    h, w = img.shape[:2]
    h2, w2, m = h // 2, w // 2, 24
    boxes = [
        (BLOCK + m, h2 - m, m, w2 - m),
        (BLOCK + m, h2 - m, w2 + m, w - m),
        (h2 + m, h - m, m, w2 - m),
        (h2 + m, h - m, w2 + m, w - m),
    ]
    return np.array([img[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0) for y0, y1, x0, x1 in boxes])


class PatternVideoTrack(MediaStreamTrack):
    """Synthetic camera at `fps`; remembers when each id was sent. With `image`, it shows that photo instead."""

    kind = "video"

    def __init__(
        self,
        fps: float = 30.0,
        width: int = 512,
        height: int = 512,
        image: np.ndarray | None = None,
        caller: int | None = None,
    ) -> None:
        super().__init__()
        self.fps, self.width, self.height, self.image = fps, width, height, image
        self.caller = caller  # stamped in the top CALLER_BITS of the id (several callers: no cross-talk)
        self.scale = 1.0  # < 1 when the server's `send.max_side` asks for smaller frames
        self.sent_at: dict[int, float] = {}
        self._count = 0
        self._next: float | None = None
        self._epoch = time.monotonic()

    def frame_id(self, count: int) -> int:
        if self.caller is None:
            return count % (1 << ID_BITS)
        return (self.caller << COUNT_BITS) | (count % (1 << COUNT_BITS))

    async def recv(self) -> VideoFrame:
        now = time.monotonic()
        if self._next is None:
            self._next = now
        delay = self._next - now
        if delay > 0:
            await asyncio.sleep(delay)
        # A camera captures on its own clock: when the sender comes late for a frame (its encoder or this loop
        # busy), the newest frame was captured at most one interval ago, and its age counts from then.
        captured = max(self._next, time.monotonic() - 1.0 / self.fps)
        self._next = max(self._next + 1.0 / self.fps, time.monotonic() - 1.0 / self.fps)  # fps may change live
        frame_id = self.frame_id(self._count)
        if self.image is not None:
            rgb = self.image if self.scale >= 1.0 else _scaled(self.image, self.scale)
        else:
            rgb = pattern_frame(frame_id, self.width, self.height, self.scale)
        frame = VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = int((captured - self._epoch) * 90000)  # capture time: fps may change live
        frame.time_base = fractions.Fraction(1, 90000)
        self.sent_at[frame_id] = captured
        self._count += 1
        return frame


def _scaled(image: np.ndarray, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((max(16, round(w * scale)), max(16, round(h * scale)))))


@dataclass
class Received:
    """A received (decoded) frame; `image` is its RGB picture (made on arrival when the client renders)."""

    frame: VideoFrame
    at: float
    rgb: np.ndarray | None = None

    @functools.cached_property
    def image(self) -> np.ndarray:
        return self.rgb if self.rgb is not None else self.frame.to_ndarray(format="rgb24")


@dataclass
class RtcClient:
    base: str
    token: str | None = None
    settings: dict[str, Any] | None = None
    fps: float = 30.0
    audio: MediaStreamTrack | None = None
    keep_frames: int = 60
    honour_send: bool = True  # apply the server's {"type":"send"} hint to the camera, as the page does
    render: bool = True  # convert every received frame to RGB, as a browser does to show it
    caller: int | None = None
    rtc_config: RTCConfiguration | None = None  # e.g. relay-only with TURN servers from /api/ice
    offer_extra: dict[str, Any] | None = None  # more fields of the offer body (e.g. "resume")
    pc: RTCPeerConnection = field(init=False)
    session_id: str | None = None
    answer: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.pc = RTCPeerConnection(self.rtc_config or RTCConfiguration(iceServers=[]))
        self.video = PatternVideoTrack(self.fps, caller=self.caller)
        self.frames: list[Received] = []
        self.frames_received = 0  # frames shown (rendered; without `render`, every frame decoded)
        self.frames_decoded = 0
        self._newest: VideoFrame | None = None
        self._decoded = asyncio.Event()
        self._renderer: ThreadPoolExecutor | None = None
        self.messages: asyncio.Queue[dict] = asyncio.Queue()
        self.all_messages: list[dict] = []
        self._tasks: list[asyncio.Task] = []
        self.channel = self.pc.createDataChannel("control")
        self._open = asyncio.Event()
        self.channel.on("open", self._open.set)
        self.channel.on("message", self._on_message)

    def _on_message(self, raw: str) -> None:
        message = json.loads(raw)
        self.all_messages.append(message)
        self.messages.put_nowait(message)
        if message.get("type") == "send" and self.honour_send:
            self.video.fps = max(1.0, min(self.fps, float(message["max_fps"])))
            longest = max(self.video.width, self.video.height)
            self.video.scale = min(1.0, float(message.get("max_side") or longest) / longest)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def connect(self, timeout: float = 20.0) -> None:
        self.pc.addTrack(self.video)
        if self.audio is not None:
            self.pc.addTrack(self.audio)

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self._tasks.append(asyncio.create_task(self._read_video(track)))
                if self.render:
                    self._renderer = ThreadPoolExecutor(1, thread_name_prefix="rtc-client-render")
                    self._tasks.append(asyncio.create_task(self._render()))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        body: dict[str, Any] = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        if self.settings:
            body["settings"] = self.settings
        body.update(self.offer_extra or {})
        async with aiohttp.ClientSession() as http:
            async with http.post(self.base + "/api/offer", json=body, headers=self.headers()) as resp:
                answer = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"offer refused: {resp.status} {answer}")
        self.session_id = answer["session_id"]
        self.answer = answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(self._open.wait(), timeout)

    async def _read_video(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.frames_decoded += 1
                if self.render:
                    self._newest = frame
                    self._decoded.set()
                    continue
                self._shown(Received(frame, time.monotonic()))

    def _shown(self, received: Received) -> None:
        self.frames_received += 1
        self.frames.append(received)
        del self.frames[: -self.keep_frames]

    async def _render(self) -> None:
        """Show the newest decoded frame whenever the renderer is free (frames decoded meanwhile are skipped)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._decoded.wait()
            self._decoded.clear()
            frame, self._newest = self._newest, None
            if frame is not None:
                rgb = await loop.run_in_executor(self._renderer, functools.partial(frame.to_ndarray, format="rgb24"))
                self._shown(Received(frame, time.monotonic(), rgb))

    async def wait_frames(self, count: int, timeout: float = 30.0) -> None:
        target = self.frames_received + count
        deadline = time.monotonic() + timeout
        while self.frames_received < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"received {self.frames_received}, wanted {target}")
            await asyncio.sleep(0.05)

    def send(self, message: dict[str, Any] | str) -> None:
        self.channel.send(message if isinstance(message, str) else json.dumps(message))

    async def expect(self, kind: str, timeout: float = 10.0, where=None) -> dict:
        """Next message of `kind` (others are skipped) for which `where(message)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {kind!r} message in {timeout}s")
            message = await asyncio.wait_for(self.messages.get(), remaining)
            if message.get("type") == kind and (where is None or where(message)):
                return message

    async def request(self, message: dict[str, Any] | str, kind: str, timeout: float = 10.0) -> dict:
        self.send(message)
        return await self.expect(kind, timeout)

    async def close(self, hang_up: bool = True) -> None:
        if hang_up and self.session_id:
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as http:
                    async with http.delete(f"{self.base}/api/sessions/{self.session_id}", headers=self.headers()):
                        pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._renderer is not None:
            self._renderer.shutdown(wait=False)
        await self.pc.close()
