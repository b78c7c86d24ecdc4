"""One session's frame pipeline: fit → [RVM matte] → engine → [composite].

`Pipeline(settings).process(rgb_uint8) -> rgb_uint8` works from a notebook with no
server. Settings changes are queued by `update()` (any thread) and applied between
frames by the thread that calls `process()`, so a frame never sees half a change.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
from PIL import Image

from speakdraw.compositing import composite, feather
from speakdraw.engines.base import Engine
from speakdraw.engines.passthrough import PassthroughEngine
from speakdraw.settings import Settings


class MattingSession(Protocol):
    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 → HxW float32 in [0, 1], 1 on the person."""

    def reset(self) -> None: ...


class Matting(Protocol):
    name: str

    def new_session(self) -> MattingSession: ...


def fit_frame(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop to the target aspect ratio, then resize; no copy when already the right size."""
    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return rgb
    target = width / height
    if w / h > target:
        crop_w = round(h * target)
        x0 = (w - crop_w) // 2
        rgb = rgb[:, x0 : x0 + crop_w]
    elif w / h < target:
        crop_h = round(w / target)
        y0 = (h - crop_h) // 2
        rgb = rgb[y0 : y0 + crop_h]
    image = Image.fromarray(np.ascontiguousarray(rgb))
    return np.asarray(image.resize((width, height), Image.BILINEAR))


_matte_worker: ThreadPoolExecutor | None = None
_matte_worker_lock = threading.Lock()


def matte_worker() -> ThreadPoolExecutor:
    """One process-wide thread for mattes, so a frame's matte runs while the engine repaints it."""
    global _matte_worker
    with _matte_worker_lock:
        if _matte_worker is None:
            _matte_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speakdraw-matte")
        return _matte_worker


class Pipeline:
    """Per-session frame transform; the model weights (engine, matting) are shared.

    In `human` mode the matte does not depend on the repainted frame, so it can be computed
    on the matte thread while the engine runs: a frame then costs max(matte, diffuse), not
    their sum. That pays when the engine leaves the CPU free (a GPU engine, passthrough); a
    CPU diffusion engine and RVM fighting over the same cores is slower than one after the
    other (measured: 52 → 71 ms at 256² on 2 cores), so `overlap_matting=None` decides by
    the engine's device.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        engine: Engine | None = None,
        matting: Matting | None = None,
        overlap_matting: bool | None = None,
    ):
        self.settings = settings or Settings()
        self.engine = engine or PassthroughEngine()
        self._overlap_matting = overlap_matting
        self.matting = matting
        self._engine_session = self.engine.new_session(self.settings)
        self._matting_session = matting.new_session() if matting is not None else None
        self._pending: Settings | None = None
        self._pending_engine: Engine | None = None
        self._pending_matting: Matting | None = None
        self._pending_image: tuple[Any] | None = None  # (encoded image prompt or None,) waiting for the next frame
        self.image_prompt: Any | None = None  # the encoded image prompt the frames use (after the next frame)
        self._lock = threading.Lock()
        self.last_timings_ms: dict[str, float] = {"matte": 0.0, "diffuse": 0.0, "total": 0.0}
        self.frames_processed = 0

    @property
    def overlap_matting(self) -> bool:
        if self._overlap_matting is not None:
            return self._overlap_matting
        return self.engine.name == "passthrough" or str(self.engine.device).startswith("cuda")

    def update(self, partial: dict[str, Any]) -> Settings:
        """Validate a partial change now (raises, changes nothing), apply it before the next frame."""
        with self._lock:
            base = self._pending or self.settings
            new = base.updated(partial)
            self._pending = new
            return new

    def set_image_prompt(self, rgb: np.ndarray | None) -> bool:
        """Encode `rgb` as the image prompt now (in the calling thread), use it from the next frame.

        None clears it. Raises ImagePromptUnavailable (with the reason) when the engine has
        none (`Engine.encode_image_prompt`), ValueError for a bad array; nothing changes then.
        Returns whether one is set. The server calls it on the video worker, so encoding
        takes its turn between frames on the device.
        """
        encoded = None if rgb is None else self.engine.encode_image_prompt(rgb)
        with self._lock:
            self._pending_image = (encoded,)
        return encoded is not None

    def adopt_image_prompt(self, encoded: Any) -> None:
        """Use an image prompt another pipeline of the same engine already encoded (a resumed call)."""
        with self._lock:
            self._pending_image = (encoded,)

    def set_engine(self, engine: Engine, matting: Matting | None = None) -> None:
        """Switch engines between frames (a call that joined while the models loaded gets them when ready)."""
        with self._lock:
            self._pending_engine = engine
            if matting is not None and self.matting is None:
                self._pending_matting = matting

    @property
    def has_image_prompt(self) -> bool:
        """Whether an image prompt is set (or is about to be, at the next frame)."""
        with self._lock:
            pending = self._pending_image
        return (pending[0] if pending is not None else self.image_prompt) is not None

    @property
    def current(self) -> Settings:
        with self._lock:
            return self._pending or self.settings

    def _apply_pending(self) -> None:
        with self._lock:
            new, self._pending = self._pending, None
            image, self._pending_image = self._pending_image, None
            engine, self._pending_engine = self._pending_engine, None
            matting, self._pending_matting = self._pending_matting, None
        if matting is not None:
            self.matting, self._matting_session = matting, matting.new_session()
        if engine is not None and engine is not self.engine:
            self._engine_session.close()
            self.engine = engine
            self._engine_session = engine.new_session(new or self.settings)
            self.image_prompt = None
        if new is not None:
            self._apply_settings(new)
        if image is not None:
            self._engine_session.set_image_prompt(image[0])
            self.image_prompt = image[0]

    def _apply_settings(self, new: Settings) -> None:
        changed = new.changed_fields(self.settings)
        self.settings = new
        if changed:
            self._engine_session.update(new, changed)
        # RVM's memory assumes consecutive frames: stale after a size change or a stretch in full mode
        if self._matting_session is not None and changed & {"width", "height", "mode"}:
            self._matting_session.reset()

    def _matte(self, frame: np.ndarray, radius: int) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        alpha = feather(self._matting_session.alpha(frame), radius)
        return alpha, (time.perf_counter() - start) * 1000.0

    def process(self, rgb: np.ndarray) -> np.ndarray:
        self._apply_pending()
        s = self.settings
        start = time.perf_counter()
        frame = fit_frame(rgb, s.width, s.height)
        human = s.mode == "human" and self._matting_session is not None
        pending_matte = None
        matte = None
        if human and self.overlap_matting:
            pending_matte = matte_worker().submit(self._matte, frame, s.matte_feather)
        elif human:
            matte = self._matte(frame, s.matte_feather)
        t_engine = time.perf_counter()
        try:
            out = self._engine_session.process(frame)
        finally:
            diffuse_ms = (time.perf_counter() - t_engine) * 1000.0
            if pending_matte is not None:
                matte = pending_matte.result()  # also on failure: the matte state must not be in use later
        if matte is not None:
            out = composite(out, frame, matte[0])
        self.last_timings_ms = {
            "matte": matte[1] if matte is not None else 0.0,
            "diffuse": diffuse_ms,
            "total": (time.perf_counter() - start) * 1000.0,
        }
        self.frames_processed += 1
        return out

    def close(self) -> None:
        self._engine_session.close()
