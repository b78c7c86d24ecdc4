"""`--acceleration none|xformers|compile|tensorrt`, applied once to the shared modules at load.

Missing packages or a missing GPU raise `EngineUnavailable` naming what to install,
so the server says so (log, /api/settings, page) instead of dying with a traceback.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import logging
import time

import numpy as np
import torch
from streamdiffusion import StreamDiffusion

from speakdraw.diffusion.engine import DiffusionEngine
from speakdraw.engines.base import EngineUnavailable
from speakdraw.settings import Settings

log = logging.getLogger(__name__)

ACCELERATIONS = ("none", "xformers", "compile", "tensorrt")
TENSORRT_INSTALL = (
    "pip install 'streamdiffusion[tensorrt]==0.1.1' tensorrt polygraphy onnx-graphsurgeon cuda-python "
    "(NVIDIA's index: --extra-index-url https://pypi.nvidia.com)"
)


def apply_acceleration(
    engine: DiffusionEngine,
    acceleration: str,
    warmup_size: tuple[int, int] = (512, 512),
    compile_mode: str | None = None,
) -> None:
    """Swap the engine's UNet/VAE for accelerated ones; warm up so the first call's frame is not the slow one.

    `compile_mode` is torch.compile's `mode` (None = its default; "max-autotune-no-cudagraphs"...).
    """
    preflight(acceleration, engine.torch_device)
    if acceleration == "xformers":
        _xformers(engine)
    elif acceleration == "compile":
        _compile(engine, warmup_size, compile_mode)
    elif acceleration == "tensorrt":
        _tensorrt(engine, warmup_size)
    engine.acceleration = acceleration


def preflight(acceleration: str, device: torch.device) -> None:
    """Refuse an acceleration that cannot work here before any weights are loaded."""
    if acceleration not in ACCELERATIONS:
        raise ValueError(f"unknown acceleration {acceleration!r}; choose one of {', '.join(ACCELERATIONS)}")
    if acceleration in ("xformers", "tensorrt") and device.type != "cuda":
        raise EngineUnavailable(
            f"--acceleration {acceleration} needs a CUDA GPU (device is {device}); use --acceleration none or compile"
        )
    if acceleration == "xformers" and importlib.util.find_spec("xformers") is None:
        raise EngineUnavailable(
            "--acceleration xformers needs the xformers package: pip install xformers "
            "(a build matching your torch), or use --acceleration none (PyTorch SDPA) or compile"
        )
    if acceleration == "tensorrt":
        try:
            import streamdiffusion.acceleration.tensorrt  # noqa: F401
        except ImportError as exc:
            raise EngineUnavailable(
                f"--acceleration tensorrt: {exc.name or exc} is not installed; {TENSORRT_INSTALL}; "
                "or use --acceleration compile"
            ) from None


def _xformers(engine: DiffusionEngine) -> None:
    engine.sd_pipe.enable_xformers_memory_efficient_attention()


def warm_up(engine: DiffusionEngine, size: tuple[int, int], frames: int = 2) -> float:
    """Run a throwaway session so compilation happens before the first call; returns seconds spent."""
    start = time.perf_counter()
    width, height = size
    session = engine.new_session(Settings(width=width, height=height))
    frame = np.full((height, width, 3), 127, np.uint8)
    for _ in range(frames):
        session.process(frame)
    session.close()
    return time.perf_counter() - start


def _compile(engine: DiffusionEngine, warmup_size: tuple[int, int], mode: str | None = None) -> None:
    """torch.compile the UNet and the VAE decoder (the per-frame FLOPs); the encoder stays eager.

    The warm-up is left to `engine.warmup()`, which the server runs on its device thread: torch keeps
    CUDA-graph state (`reduce-overhead`) per thread, so graphs recorded on the loader thread would be
    recorded again, or fail, on the thread that runs the frames."""
    engine.unet = torch.compile(engine.unet, mode=mode)
    engine.vae.decoder = torch.compile(engine.vae.decoder, mode=mode)
    engine.warmup_hook = lambda: log.info(
        "torch.compile warm-up at %dx%d took %.1f s", *warmup_size, warm_up(engine, warmup_size)
    )


def _tensorrt(engine: DiffusionEngine, size: tuple[int, int]) -> None:
    """TensorRT engines through streamdiffusion.acceleration.tensorrt, built once per model and size.

    `accelerate_with_tensorrt` deletes the modules from the stream and the pipeline
    it is given, so it gets a template stream over a shallow copy of the pipeline;
    the engines it returns are shared by every session. They are built for one
    frame size (`fixed_size`): sessions resize to it.
    """
    from streamdiffusion.acceleration.tensorrt import accelerate_with_tensorrt

    from speakdraw import weights

    width, height = size
    key = hashlib.sha1(f"{engine.model_id}|{engine.dtype}".encode()).hexdigest()[:12]
    engine_dir = weights.home() / "tensorrt" / f"{key}-{width}x{height}"
    template = StreamDiffusion(
        copy.copy(engine.sd_pipe),
        t_index_list=[0],
        torch_dtype=engine.dtype,
        width=width,
        height=height,
        cfg_type="none",
    )
    # Up to 4 steps x 2 (cfg 'full') UNet rows per frame.
    accelerate_with_tensorrt(template, str(engine_dir), max_batch_size=8, min_batch_size=1)
    engine.unet, engine.vae = template.unet, template.vae
    engine.fixed_size = (width, height)
    engine.max_unet_rows = 8  # process_batch cuts larger batches of calls into several UNet calls
    warm_up(engine, size)
