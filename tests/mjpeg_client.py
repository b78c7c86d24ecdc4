"""A strict MJPEG (`multipart/x-mixed-replace`) reader for tests and bench/mjpeg.py.

Each part must carry `Content-Type: image/jpeg` and a `Content-Length` that matches its body, and the body
must be a whole JPEG (SOI ... EOI) that Pillow decodes.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import aiohttp
import numpy as np
from av import VideoFrame
from PIL import Image

from tests.rtc_client import BLOCK, PatternVideoTrack


@dataclass
class Part:
    jpeg: bytes
    at: float  # time.monotonic() when the part was complete

    def image(self) -> np.ndarray:
        with Image.open(io.BytesIO(self.jpeg)) as img:
            assert img.format == "JPEG"
            return np.asarray(img.convert("RGB"))


class MjpegError(AssertionError):
    pass


async def _read_line(content: aiohttp.StreamReader) -> bytes:
    line = await content.readline()
    if not line:
        raise EOFError
    return line.rstrip(b"\r\n")


async def read_parts(response: aiohttp.ClientResponse, count: int | None = None, seconds: float | None = None):
    """Yield Parts until `count` parts, `seconds` elapsed, or the closing boundary (then returns)."""
    content_type = response.headers.get("Content-Type", "")
    if not content_type.startswith("multipart/x-mixed-replace"):
        raise MjpegError(f"not an MJPEG stream: {content_type!r}")
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    deadline = None if seconds is None else time.monotonic() + seconds
    got = 0
    content = response.content
    while (count is None or got < count) and (deadline is None or time.monotonic() < deadline):
        line = await _read_line(content)
        if not line:
            continue  # blank line between parts
        if line == b"--" + boundary + b"--":
            return
        if line != b"--" + boundary:
            raise MjpegError(f"expected boundary, got {line[:80]!r}")
        headers: dict[str, str] = {}
        while True:
            line = await _read_line(content)
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("content-type") != "image/jpeg":
            raise MjpegError(f"part is not image/jpeg: {headers}")
        length = int(headers["content-length"])
        body = await content.readexactly(length)
        if not (body.startswith(b"\xff\xd8") and body.endswith(b"\xff\xd9")):
            raise MjpegError("part is not a whole JPEG (SOI/EOI missing)")
        got += 1
        yield Part(body, time.monotonic())


class NoisyPatternTrack(PatternVideoTrack):
    """The id-stamped pattern plus noise below the id row: ~20 KB JPEGs instead of ~5 KB, so that a server that
    queued parts for a slow viewer would outgrow the kernel's socket buffer (~3 MiB on loopback) within seconds."""

    rng = np.random.default_rng(0)

    async def recv(self) -> VideoFrame:
        frame = await super().recv()
        img = frame.to_ndarray(format="rgb24").astype(np.int16)
        img[BLOCK:] += self.rng.integers(-60, 60, size=img[BLOCK:].shape, dtype=np.int16)
        out = VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
        out.pts, out.time_base = frame.pts, frame.time_base
        return out
