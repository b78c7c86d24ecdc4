"""One session's frame pipeline: fit → [RVM matte] → engine → [composite].

The fit step crops and resizes each camera frame to the size the call is worked at: the settings'
`width`/`height`, or smaller when the server sets `working_side` (its capacity model steps the longest
side down while the device cannot keep the frame rate at the full size; the settings stay the upper
bound, and the output comes back at the working size).

`Pipeline(settings).process(rgb_uint8) -> rgb_uint8` works from a notebook with no
server and no threads. Settings, image-prompt and engine changes are queued by any
thread (`update`, `set_image_prompt`, `set_engine`) as typed `Change`s and applied in
order between frames by the thread that runs the frames, so a frame never sees half a
change. `process_frames` runs the newest frame of several sessions as one device step
(the device runner's batch); `Pipeline.process` is the same path for one frame.

A `Pipeline` is SpeakDraw's per-call frame path, not a diffusers pipeline: the diffusers
`StableDiffusionPipeline` a diffusion engine wraps is that engine's `sd_pipe`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from speakdraw.compositing import composite, feather
from speakdraw.engines.base import Engine, EngineSession
from speakdraw.engines.passthrough import PassthroughEngine
from speakdraw.settings import Settings


class MattingSession(Protocol):
    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 → HxW float32 in [0, 1], 1 on the person."""

    def reset(self) -> None: ...


class Matting(Protocol):
    name: str

    def new_session(self) -> MattingSession: ...

    def alpha_batch(self, items: Sequence[tuple[MattingSession, np.ndarray]]) -> list[np.ndarray]:
        """Each session's matte of its frame, as `session.alpha(frame)` alone would give."""


def scaled_to_side(width: int, height: int, side: int | None) -> tuple[int, int]:
    """(width, height) with the longer side brought down to `side` (None: unchanged), aspect kept, multiples of 8."""
    longest = max(width, height)
    if side is None or side >= longest:
        return width, height
    scale = side / longest
    return tuple(max(8, round(v * scale / 8) * 8) for v in (width, height))  # type: ignore[return-value]


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


# ---- queued changes: made on any thread, applied between frames --------------------------------


@dataclass(frozen=True)
class SettingsChange:
    settings: Settings


@dataclass(frozen=True)
class ImagePromptChange:
    encoded: Any | None  # an `Engine.encode_image_prompt` result; None clears


@dataclass(frozen=True)
class EngineChange:
    engine: Engine
    matting: Matting | None


Change = SettingsChange | ImagePromptChange | EngineChange


class ChangeQueue:
    """Pending changes, at most one of each kind (only the newest settings, image prompt or engine
    matters), applied in a fixed order: engine, then settings, then image prompt. So the queue never
    grows, and an image prompt always meets the engine that will use it."""

    ORDER: tuple[type, ...] = (EngineChange, SettingsChange, ImagePromptChange)

    def __init__(self) -> None:
        self._slots: dict[type, Change] = {}
        self._lock = threading.Lock()

    def put(self, change: Change) -> None:
        with self._lock:
            self._slots[type(change)] = change

    def take_all(self) -> list[Change]:
        with self._lock:
            slots, self._slots = self._slots, {}
        return [slots[kind] for kind in self.ORDER if kind in slots]

    def newest(self, kind: type) -> Any | None:
        with self._lock:
            return self._slots.get(kind)

    def __len__(self) -> int:
        return len(self._slots)


@dataclass
class _Frame:
    """One session's frame inside a step: fitted input, then its matte and engine output."""

    pipeline: Pipeline
    frame: np.ndarray
    human: bool
    alpha: np.ndarray | None = None
    out: np.ndarray | None = None
    error: BaseException | None = None


class Pipeline:
    """Per-session frame transform; the model weights (engine, matting) are shared.

    In `human` mode the matte does not depend on the repainted frame, so with a
    `matte_executor` it is computed on that thread while the engine runs: a frame then
    costs max(matte, diffuse), not their sum. That pays when the engine leaves the CPU
    free (a GPU engine, passthrough); a CPU diffusion engine and RVM fighting over the
    same cores is slower than one after the other (measured: 52 → 71 ms at 256² on 2
    cores), so `overlap_matting=None` decides by the engine's device. Without an
    executor (a notebook, a test) everything runs on the calling thread.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        engine: Engine | None = None,
        matting: Matting | None = None,
        overlap_matting: bool | None = None,
        matte_executor: Executor | None = None,
    ):
        self.settings = settings or Settings()
        self.engine = engine or PassthroughEngine()
        self._overlap_matting = overlap_matting
        self.matte_executor = matte_executor
        self.matting = matting
        self._engine_session: EngineSession = self.engine.new_session(self.settings)
        self._matting_session = matting.new_session() if matting is not None else None
        self.changes = ChangeQueue()
        self.image_prompt: Any | None = None  # the encoded image prompt the frames use (after the next frame)
        self.last_timings_ms: dict[str, float] = {"matte": 0.0, "diffuse": 0.0, "total": 0.0}
        self.frames_processed = 0
        # The longest side frames are worked at, set by the server from any thread (None: as the settings ask).
        self.working_side: int | None = None
        self.last_size: tuple[int, int] | None = None  # (width, height) the newest frame was worked at
        self._closed = False

    @property
    def overlap_matting(self) -> bool:
        if self.matte_executor is None:
            return False
        if self._overlap_matting is not None:
            return self._overlap_matting
        return self.engine.name == "passthrough" or str(self.engine.device).startswith("cuda")

    # ---- changes (any thread) -------------------------------------------------------------
    @property
    def current(self) -> Settings:
        """The settings the next frame will use."""
        pending = self.changes.newest(SettingsChange)
        return pending.settings if pending is not None else self.settings

    def update(self, partial: dict[str, Any]) -> Settings:
        """Validate a partial change now (raises, changes nothing), apply it before the next frame."""
        new = self.current.updated(partial)
        self.changes.put(SettingsChange(new))
        return new

    def set_image_prompt(self, rgb: np.ndarray | None) -> bool:
        """Encode `rgb` as the image prompt now (in the calling thread), use it from the next frame.

        None clears it. Raises ImagePromptUnavailable (with the reason) when the engine has
        none (`Engine.encode_image_prompt`), ValueError for a bad array; nothing changes then.
        Returns whether one is set. The server calls it on the device's worker, so encoding
        takes its turn between frames on the device.
        """
        encoded = None if rgb is None else self.engine.encode_image_prompt(rgb)
        self.changes.put(ImagePromptChange(encoded))
        return encoded is not None

    def adopt_image_prompt(self, encoded: Any) -> None:
        """Use an image prompt another pipeline of the same engine already encoded (a resumed call), from the
        next frame: it is queued like any other change (`ImagePromptChange`)."""
        self.changes.put(ImagePromptChange(encoded))

    def set_engine(self, engine: Engine, matting: Matting | None = None) -> None:
        """Switch engines between frames (a call that joined while the models loaded gets them when ready)."""
        self.changes.put(EngineChange(engine, matting))

    @property
    def next_engine(self) -> Engine:
        """The engine the next frame will use."""
        pending = self.changes.newest(EngineChange)
        return pending.engine if pending is not None else self.engine

    @property
    def next_image_prompt(self) -> Any | None:
        """The encoded image prompt the next frame will use (a queued change, else the one in use)."""
        pending = self.changes.newest(ImagePromptChange)
        return pending.encoded if pending is not None else self.image_prompt

    @property
    def has_image_prompt(self) -> bool:
        """Whether an image prompt is set (or is about to be, at the next frame)."""
        return self.next_image_prompt is not None

    # ---- applied between frames (the frame thread) ------------------------------------------
    def apply_changes(self) -> None:
        for change in self.changes.take_all():
            if isinstance(change, EngineChange):
                self._switch_engine(change)
            elif isinstance(change, SettingsChange):
                self._apply_settings(change.settings)
            else:
                self._engine_session.set_image_prompt(change.encoded)
                self.image_prompt = change.encoded

    def _switch_engine(self, change: EngineChange) -> None:
        if change.matting is not None and self.matting is None:
            self.matting, self._matting_session = change.matting, change.matting.new_session()
        if change.engine is not self.engine:
            self._engine_session.close()
            self.engine = change.engine
            self._engine_session = change.engine.new_session(self.settings)
            self.image_prompt = None

    def _apply_settings(self, new: Settings) -> None:
        changed = new.changed_fields(self.settings)
        self.settings = new
        if changed:
            self._engine_session.update(new, changed)
        # RVM's memory assumes consecutive frames: stale after a size change or a stretch in full mode
        if self._matting_session is not None and changed & {"width", "height", "mode"}:
            self._matting_session.reset()

    def working_size(self) -> tuple[int, int]:
        """The (width, height) the next frame is worked at: the settings' size, or smaller (`working_side`)."""
        s = self.current
        return scaled_to_side(s.width, s.height, self.working_side)

    def _begin(self, rgb: np.ndarray) -> _Frame:
        self.apply_changes()
        s = self.settings
        size = scaled_to_side(s.width, s.height, self.working_side)
        if size != self.last_size and self.last_size is not None and self._matting_session is not None:
            self._matting_session.reset()  # RVM's memory is of frames of the old size
        self.last_size = size
        frame = fit_frame(rgb, *size)
        return _Frame(self, frame, human=s.mode == "human" and self._matting_session is not None)

    def process(self, rgb: np.ndarray) -> np.ndarray:
        """One frame of this session alone (the same path as a batch of one)."""
        return process_frames([(self, rgb)], self.matte_executor)[0].result()

    def close(self) -> None:
        """Release the engine session; call it on the thread that runs this pipeline's frames."""
        if not self._closed:
            self._closed = True
            self._engine_session.close()


class FrameResult:
    """A session's output of one step, or the exception its frame raised (other sessions are unaffected)."""

    __slots__ = ("out", "error")

    def __init__(self, out: np.ndarray | None, error: BaseException | None) -> None:
        self.out, self.error = out, error

    def result(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        assert self.out is not None
        return self.out


def _matte_all(frames: list[_Frame]) -> float:
    """Matte every human-mode frame, batched per matting model; returns the time it took in ms."""
    start = time.perf_counter()
    groups: dict[int, list[_Frame]] = {}
    for f in frames:
        if f.human:
            groups.setdefault(id(f.pipeline.matting), []).append(f)
    for group in groups.values():
        model = group[0].pipeline.matting
        assert model is not None
        alphas = model.alpha_batch([(f.pipeline._matting_session, f.frame) for f in group])
        for f, alpha in zip(group, alphas, strict=True):
            f.alpha = feather(alpha, f.pipeline.settings.matte_feather)
    return (time.perf_counter() - start) * 1000.0


def _run_engines(frames: list[_Frame]) -> None:
    """One `process_batch` per (engine, frame shape); a failing batch is retried frame by frame so
    that only the session whose frame fails gets the error."""
    groups: dict[tuple[int, tuple[int, ...]], list[_Frame]] = {}
    for f in frames:
        groups.setdefault((id(f.pipeline.engine), f.frame.shape), []).append(f)
    for group in groups.values():
        engine = group[0].pipeline.engine
        try:
            outs = engine.process_batch([(f.pipeline._engine_session, f.frame) for f in group])
            for f, out in zip(group, outs, strict=True):
                f.out = out
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
                continue
            for f in group:
                try:
                    f.out = engine.process_batch([(f.pipeline._engine_session, f.frame)])[0]
                except Exception as one:
                    f.error = one


def process_frames(
    items: Sequence[tuple[Pipeline, np.ndarray]], matte_executor: Executor | None = None
) -> list[FrameResult]:
    """The newest frame of each of several sessions as one device step: mattes batched per matting
    model (on `matte_executor`, overlapping the engine, when every pipeline asks for overlap),
    engine frames batched per engine and shape, then each composite. Queued changes are applied
    first, on this thread. One result per item, in order; a failure stays with its own session."""
    start = time.perf_counter()
    results: list[FrameResult] = [FrameResult(None, None) for _ in items]
    frames: list[tuple[int, _Frame]] = []
    for i, (pipeline, rgb) in enumerate(items):
        try:
            frames.append((i, pipeline._begin(rgb)))
        except Exception as exc:  # e.g. a settings change the engine refuses
            results[i].error = exc
    live = [f for _, f in frames]
    human = [f for f in live if f.human]
    overlap = matte_executor is not None and all(f.pipeline.overlap_matting for f in live)
    matte_ms = 0.0
    pending: Future | None = None
    if human and overlap:
        assert matte_executor is not None
        pending = matte_executor.submit(_matte_all, human)
    elif human:
        matte_ms = _matte_guarded(human)
    t_engine = time.perf_counter()
    try:
        _run_engines([f for f in live if f.error is None])
    finally:
        diffuse_ms = (time.perf_counter() - t_engine) * 1000.0
        if pending is not None:  # also on failure: the matte state must not be in use after this returns
            matte_ms = _matte_guarded(human, pending)
    total_ms = (time.perf_counter() - start) * 1000.0
    for i, f in frames:
        if f.error is not None:
            results[i].error = f.error
            continue
        assert f.out is not None
        out = composite(f.out, f.frame, f.alpha) if f.alpha is not None else f.out
        f.pipeline.last_timings_ms = {"matte": matte_ms if f.human else 0.0, "diffuse": diffuse_ms, "total": total_ms}
        f.pipeline.frames_processed += 1
        results[i].out = out
    return results


def _matte_guarded(human: list[_Frame], pending: Future | None = None) -> float:
    """The mattes' time in ms; if matting fails, every human-mode frame of the step carries the error."""
    try:
        return pending.result() if pending is not None else _matte_all(human)
    except Exception as exc:
        for f in human:
            f.error = f.error or exc
        return 0.0
