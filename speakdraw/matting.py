"""Person matte for `human` mode: Robust Video Matting (MobileNetV3) through ONNX Runtime.

One `RVMMatting` holds the shared InferenceSession (thread-safe for concurrent
`run` calls); each call gets an `RVMSession` that owns RVM's recurrent state, so
one call's temporal memory never leaks into another. The state is dropped on a
cut — a resolution change, or a scene change seen as a jump in a 32-px luma
thumbnail (cheap: strided, block-averaged) — because RVM's memory of the
previous scene would otherwise smear into the new one for a few frames.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

log = logging.getLogger(__name__)

WEIGHTS_NAME = "rvm-mobilenetv3"
THUMB_SIDE = 32


def downsample_ratio(height: int, width: int, internal_side: int = 512) -> float:
    """RVM's `downsample_ratio` for a frame size.

    The RVM README advises a ratio that puts the downsampled frame's sides "between
    256 and 512 pixels" (its table: ≤512² → 1, 720p → 0.375–0.6, 1080p → 0.25–0.4,
    4K → 0.125–0.2), i.e. a fixed internal size whatever the input. We scale the long
    side to `internal_side` (never up). The encoder's cost grows with that area, so the
    default is 512 on a GPU but 192 on a CPU: on 2 cores 256² costs ~2x the 30 fps
    budget, while 192² still gives a clean matte for a person framed by a webcam (see
    tests/test_matting.py and bench/matting.py; 128–160 start to leak onto the background).
    """
    if not 64 <= internal_side <= 1024:
        raise ValueError("internal_side must be within 64..1024")
    return float(min(1.0, internal_side / max(height, width)))


def _usable_cores() -> int:
    """Cores this process may run on (respects taskset / container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _providers(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        log.warning("matting: CUDAExecutionProvider not available in onnxruntime (%s); using the CPU", available)
    return ["CPUExecutionProvider"]


@dataclass
class MattingOptions:
    """How the shared RVM model runs."""

    device: str = "cpu"  # cpu | cuda | auto
    threads: int | None = None  # ORT intra-op threads; None → all cores
    internal_side: int | None = None  # long side RVM's encoder sees; None → 512 on CUDA, 192 on CPU
    cut_threshold: float = 40.0  # mean |Δluma| (0–255) of the thumbnail above which the state resets
    # True: RVM's own path, the deep guided filter refines the matte at full resolution.
    # False: shrink the frame to the internal size first, upscale the matte (bilinear);
    # skips the full-resolution refiner and its resizes. None → True on CUDA, False on CPU.
    refine: bool | None = None


class RVMMatting:
    """The shared RVM model; `new_session()` per call."""

    name = "rvm"

    def __init__(self, model_path: str | os.PathLike, options: MattingOptions | None = None):
        self.options = options or MattingOptions()
        self.model_path = Path(model_path)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = self.options.threads or _usable_cores()
        so.inter_op_num_threads = 1
        # No busy-waiting between ops: the diffusion engine shares these cores.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.model_path), so, providers=_providers(self.options.device))
        self.provider = self.session.get_providers()[0]
        self.device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"
        if self.options.internal_side is None:
            self.internal_side = 512 if self.device == "cuda" else 192
        else:
            self.internal_side = self.options.internal_side
        downsample_ratio(512, 512, self.internal_side)  # validate once, early
        self.refine = self.device == "cuda" if self.options.refine is None else self.options.refine

    def new_session(self) -> RVMSession:
        return RVMSession(self)

    def run(self, src: np.ndarray, state: list[np.ndarray], ratio: float) -> tuple[np.ndarray, list[np.ndarray]]:
        """One RVM step: NCHW float32 src in [0, 1] + recurrent state → (pha NCHW, new state)."""
        feeds = {f"r{i + 1}i": r for i, r in enumerate(state)}
        feeds["src"] = src
        feeds["downsample_ratio"] = np.array([ratio], dtype=np.float32)
        _fgr, pha, *rec = self.session.run(["fgr", "pha", "r1o", "r2o", "r3o", "r4o"], feeds)
        return pha, rec

    def alpha_batch(self, items: Sequence[tuple[RVMSession, np.ndarray]]) -> list[np.ndarray]:
        """Mattes of several calls' frames; frames whose size and recurrent-state shapes agree share one
        ONNX run (batch along N, each call's own state), the result equal to each call's `alpha` alone."""
        prepared = [session.prepare(rgb) for session, rgb in items]
        groups: dict[tuple, list[int]] = {}
        for i, (session, _) in enumerate(items):
            p = prepared[i]
            key = (p.src.shape, p.ratio, tuple(r.shape for r in session.state))
            groups.setdefault(key, []).append(i)
        out: list[np.ndarray | None] = [None] * len(items)
        for indices in groups.values():
            src = np.concatenate([prepared[i].src for i in indices])
            state = [np.concatenate([items[i][0].state[k] for i in indices]) for k in range(4)]
            pha, rec = self.run(src, state, prepared[indices[0]].ratio)
            for j, i in enumerate(indices):
                session = items[i][0]
                session.state = [r[j : j + 1] for r in rec]
                out[i] = session.finish(prepared[i], pha[j : j + 1])
        return [a for a in out if a is not None]

    def features(self) -> dict[str, str | int]:
        return {
            "matting": self.name,
            "provider": self.provider,
            "internal_side": self.internal_side,
            "refine": self.refine,
        }


def _initial_state() -> list[np.ndarray]:
    return [np.zeros((1, 1, 1, 1), dtype=np.float32) for _ in range(4)]


class RVMSession:
    """One call's matte stream: recurrent state + cut detection. One thread at a time."""

    def __init__(self, model: RVMMatting):
        self.model = model
        self.state = _initial_state()
        self._shape: tuple[int, int] | None = None
        self._thumb: np.ndarray | None = None
        self.frames = 0
        self.cuts = 0

    def reset(self) -> None:
        """Forget the temporal memory (next frame is matted as a first frame)."""
        self.state = _initial_state()
        self._thumb = None

    def _thumbnail(self, rgb: np.ndarray) -> np.ndarray:
        """~32x32 block-averaged luma, mean removed: robust to noise, exposure and small motion; ~0.3 ms at 720p."""
        h, w = rgb.shape[:2]
        step = max(1, min(h, w) // (4 * THUMB_SIDE))
        luma = rgb[::step, ::step].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        bh, bw = max(1, luma.shape[0] // THUMB_SIDE), max(1, luma.shape[1] // THUMB_SIDE)
        gh, gw = luma.shape[0] // bh, luma.shape[1] // bw
        thumb = luma[: gh * bh, : gw * bw].reshape(gh, bh, gw, bw).mean(axis=(1, 3))
        return thumb - thumb.mean()  # an exposure change is not a cut

    def _detect_cut(self, rgb: np.ndarray) -> bool:
        shape = rgb.shape[:2]
        thumb = self._thumbnail(rgb)
        cut = False
        if shape != self._shape:
            cut = self._shape is not None
        elif self._thumb is not None and thumb.shape == self._thumb.shape:
            cut = float(np.mean(np.abs(thumb - self._thumb))) > self.model.options.cut_threshold
        self._shape = shape
        if cut:
            self.cuts += 1
            self.reset()
        self._thumb = thumb
        return cut

    def prepare(self, rgb: np.ndarray) -> _Prepared:
        """Validate, detect a cut, shrink to RVM's internal size: the network input of one frame."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
        self._detect_cut(rgb)
        h, w = rgb.shape[:2]
        ratio = downsample_ratio(h, w, self.model.internal_side)
        small = ratio < 1.0 and not self.model.refine
        if small:
            size = (max(16, round(w * ratio)), max(16, round(h * ratio)))
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
            ratio = 1.0
        src = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)
        src *= np.float32(1.0 / 255.0)
        return _Prepared(src, ratio, (w, h), small)

    def finish(self, prepared: _Prepared, pha: np.ndarray) -> np.ndarray:
        self.frames += 1
        alpha = pha[0, 0]
        if prepared.small:
            alpha = np.asarray(Image.fromarray(alpha, mode="F").resize(prepared.size, Image.BILINEAR))
        return np.clip(alpha, 0.0, 1.0)

    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 → HxW float32 matte in [0, 1], 1 on the person."""
        prepared = self.prepare(rgb)
        pha, self.state = self.model.run(prepared.src, self.state, prepared.ratio)
        return self.finish(prepared, pha)


@dataclass
class _Prepared:
    src: np.ndarray  # 1x3xHxW float32 in [0, 1]
    ratio: float  # RVM's downsample_ratio
    size: tuple[int, int]  # (w, h) of the frame the matte is for
    small: bool  # shrunk before the network: upscale the matte after


def load_matting(device: str = "cpu", options: MattingOptions | None = None, progress: bool = True) -> RVMMatting:
    """RVM with its weights from the registry; raises `WeightsUnavailable` (listing what was tried)."""
    from speakdraw.weights import fetch

    path = fetch(WEIGHTS_NAME, progress=progress)
    opts = options or MattingOptions(device=device)
    model = RVMMatting(path, opts)
    log.info("matting: RVM MobileNetV3 on %s, %s, from %s", model.provider, model.features(), path)
    return model
