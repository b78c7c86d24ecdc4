"""What each video encoder costs on this machine, measured once, so `--video-codec auto` can pick the cheapest.

The server encodes every output frame of every call (and every WHEP viewer), so the encoder is a
per-frame cost as real as the model's. aiortc picks its encoder by codec (`aiortc.codecs.get_encoder`):
VP8 is libvpx, H.264 is libx264 — both software here, and libx264 costs about 3× libvpx per frame
(bench/video_codecs.py). A build whose H.264 encoder is a hardware one measures cheaper and gets H.264.

`EncodeCostProbe.measure()` encodes a short moving, textured clip (like a diffusion output, not a flat
card) at the working size with each codec, alternating in rounds so that load from other processes hits
both alike, and keeps each codec's median. It is bounded (`budget_s`: a codec not measured by then is
left out) and runs once per process, at start-up on the codec thread (`start`); until it is done the
choice is the software guess, VP8.
"""

from __future__ import annotations

import fractions
import logging
import threading
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

import numpy as np
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import VideoFrame

log = logging.getLogger(__name__)

CODECS = {"vp8": "video/VP8", "h264": "video/H264"}
WARMUP_FRAMES = 2  # an encoder's first frames (allocation, the keyframe) are not what a call pays per frame


def clip(side: int, count: int) -> list[VideoFrame]:
    """A textured picture that moves and changes colour (yuv420p, as the sender hands it to the encoder)."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (side * 2, side * 2, 3), dtype=np.uint8)
    texture = ((texture.astype(np.uint16) + np.roll(texture, 1, 0) + np.roll(texture, 1, 1)) // 3).astype(np.uint8)
    frames = []
    for i in range(count):
        dx, dy = (i * 7) % side, (i * 5) % side
        img = np.ascontiguousarray(texture[dy : dy + side, dx : dx + side])
        img[: side // 2, :, 0] = (img[: side // 2, :, 0].astype(np.int32) + i * 9) % 256
        frame = VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        frames.append(frame)
    return frames


@dataclass
class EncodeCost:
    """Median encode time per frame (ms) of each codec at `side`², and why a codec has none."""

    side: int
    ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # how long the measurement took

    def cheapest(self, margin: float = 0.8) -> str:
        """VP8 unless H.264 measured clearly cheaper (`margin` × VP8's time): VP8 is what every browser that
        runs the page decodes, so H.264 must earn its place."""
        vp8, h264 = self.ms.get("vp8"), self.ms.get("h264")
        if h264 is not None and (vp8 is None or h264 < margin * vp8):
            return "h264"
        return "vp8"


class EncodeCostProbe:
    """One measurement per process (encoders are a property of the machine and the build, not of a call)."""

    def __init__(self, side: int = 512, frames: int = 8, rounds: int = 2, budget_s: float = 4.0) -> None:
        self.side, self.frames, self.rounds, self.budget_s = side, frames, rounds, budget_s
        self._lock = threading.Lock()
        self._result: EncodeCost | None = None
        self._future: Future | None = None

    def result(self) -> EncodeCost | None:
        """The measurement, or None while it has not finished (never blocks)."""
        return self._result

    def start(self, executor: Executor | None = None) -> Future:
        """Measure on `executor` (the codec thread) unless that already started; the Future has the result."""
        with self._lock:
            if self._future is None:
                if executor is None:
                    self._future = Future()
                    self._future.set_result(self.measure())
                else:
                    self._future = executor.submit(self.measure)
            return self._future

    def measure(self) -> EncodeCost:
        if self._result is not None:
            return self._result
        started = time.perf_counter()
        deadline = started + self.budget_s
        frames = clip(self.side, WARMUP_FRAMES + self.frames)
        samples: dict[str, list[float]] = {name: [] for name in CODECS}
        errors: dict[str, str] = {}
        for _ in range(self.rounds):
            for name, mime in CODECS.items():
                if name in errors or time.perf_counter() > deadline:
                    continue
                try:
                    samples[name] += self._encode(mime, frames, deadline)
                except Exception as exc:  # e.g. a build of av without libx264: that codec is out
                    errors[name] = f"{type(exc).__name__}: {exc}"
        for name, values in samples.items():
            if not values and name not in errors:
                errors[name] = f"not measured within {self.budget_s:g} s"
        cost = EncodeCost(
            side=self.side,
            ms={name: round(float(np.median(v)), 2) for name, v in samples.items() if v},
            errors=errors,
            seconds=round(time.perf_counter() - started, 2),
        )
        self._result = cost
        log.info(
            "video encode cost at %d px: %s (measured in %.1f s)",
            self.side,
            ", ".join(f"{n} {ms:.1f} ms" for n, ms in cost.ms.items()) or "none",
            cost.seconds,
        )
        return cost

    @staticmethod
    def _encode(mime: str, frames: list[VideoFrame], deadline: float) -> list[float]:
        encoder = get_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=90000))
        times = []
        for i, frame in enumerate(frames):
            start = time.perf_counter()
            encoder.encode(frame, force_keyframe=False)
            if i >= WARMUP_FRAMES:
                times.append((time.perf_counter() - start) * 1000.0)
            if time.perf_counter() > deadline:
                break
        return times


PROBE = EncodeCostProbe()  # the process's one measurement (server/codecs.py reads it)
