"""Real-time img2img: StreamDiffusion over diffusers, for the `sd-turbo` and `tiny` engines.

`load_diffusion_engine(options)` loads the modules once (or raises `EngineUnavailable`
saying why and what to do); `engine.new_session(settings)` gives each call its own
stream. See `engine.py` for the per-frame path and `stream_state.py` for what each
settings change re-prepares.
"""

from __future__ import annotations

import logging

from speakdraw.diffusion.acceleration import ACCELERATIONS, apply_acceleration, preflight
from speakdraw.diffusion.architectures import Components, build_components
from speakdraw.diffusion.engine import DiffusionEngine, DiffusionSession
from speakdraw.diffusion.loading import (
    DEFAULT_MODEL,
    DEFAULT_TAESD,
    LOADS,
    load_pretrained,
    load_tiny,
    resolve_device,
    resolve_dtype,
)
from speakdraw.diffusion.stream_state import t_index_list
from speakdraw.engines.base import EngineOptions

log = logging.getLogger(__name__)


def load_diffusion_engine(options: EngineOptions) -> DiffusionEngine:
    """Load 'sd-turbo' or 'tiny' as `options` says; raises EngineUnavailable when it cannot be had.

    `options.extra` may hold `dtype` ('float16'...), `taesd` (hub id or folder of the
    tiny autoencoder) and `warmup_size` ((w, h) for compile/TensorRT warm-up).
    """
    if options.engine not in ("sd-turbo", "tiny"):
        raise ValueError(f"not a diffusion engine: {options.engine!r}")
    device = resolve_device(options.device)
    dtype = resolve_dtype(device, options.extra.get("dtype"))
    preflight(options.acceleration, device)
    if options.engine == "tiny":
        components = load_tiny(use_taesd=options.use_taesd, device=device)
        model_id = "tiny (random weights, built from config)"
    else:
        taesd = options.extra.get("taesd", DEFAULT_TAESD)
        components = load_pretrained(options.model, use_taesd=options.use_taesd, taesd=taesd, dtype=dtype)
        model_id = options.model
    engine = DiffusionEngine(components, name=options.engine, model_id=model_id, device=device, dtype=dtype)
    apply_acceleration(engine, options.acceleration, tuple(options.extra.get("warmup_size", (512, 512))))
    log.info("diffusion engine %s ready: %s on %s (%s, %s)", engine.name, model_id, device, dtype, options.acceleration)
    return engine


__all__ = [
    "ACCELERATIONS",
    "DEFAULT_MODEL",
    "LOADS",
    "Components",
    "DiffusionEngine",
    "DiffusionSession",
    "build_components",
    "load_diffusion_engine",
    "t_index_list",
]
