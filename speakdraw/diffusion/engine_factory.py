"""`load_diffusion_engine(options)`: the `sd-turbo`, `sdxl-turbo` and `tiny` engines, loaded once, IP-Adapter attached.

Raises `EngineUnavailable` saying why and what to do; `speakdraw.engines` falls back then.
The top of the diffusion package: it imports the parts (`pretrained.py`: the modules' weights; families, IP-Adapter,
acceleration), none of them imports it.
"""

from __future__ import annotations

import logging

from diffusers import UNet2DConditionModel
from transformers import CLIPVisionModelWithProjection

from speakdraw.diffusion.acceleration import apply_acceleration, preflight
from speakdraw.diffusion.engine import DiffusionEngine
from speakdraw.diffusion.families import ADAPTER_WEIGHTS, detect_family, unavailable_reason
from speakdraw.diffusion.ip_adapter import (
    AdapterMismatch,
    IPAdapter,
    read_adapter_file,
    tiny_adapter_state,
    tiny_image_encoder,
)
from speakdraw.diffusion.pretrained import (
    DEFAULT_LCM_LORA,
    DEFAULT_MODEL,
    DEFAULT_SDXL_MODEL,
    TINY_MODELS,
    load_pretrained,
    load_tiny,
    registry_folder,
    resolve_device,
    resolve_dtype,
)
from speakdraw.engines.base import EngineOptions, EngineUnavailable

log = logging.getLogger(__name__)


def load_diffusion_engine(options: EngineOptions) -> DiffusionEngine:
    """Load 'sd-turbo', 'sdxl-turbo' or 'tiny' as `options` says; raises EngineUnavailable when it cannot be had.

    `options.extra` may hold `dtype` ('float16'...), `taesd` (hub id or folder of the
    tiny autoencoder), `warmup_size` ((w, h) for compile/TensorRT warm-up),
    `lcm_lora` (SD 1.5 models: True for `latent-consistency/lcm-lora-sdv1-5`, or a hub id /
    folder / .safetensors file; fused into the UNet at load) and `ip_adapter` ('auto'
    default: SD 1.5-family models load IP-Adapter through the weight registry, `tiny-sd15`
    builds a tiny random one in-process; 'registry': the registry for tiny-sd15 too;
    'off'). `--engine tiny --model tiny-sd15` / `tiny-sdxl` are the SD 1.5- / SDXL-shaped tiny
    models. `sdxl-turbo` with the default `--model` (sd-turbo's id) loads `stabilityai/sdxl-turbo`;
    the family of any `--model` folder is read from its configs (an SDXL folder runs as SDXL).
    """
    if options.engine not in ("sd-turbo", "sdxl-turbo", "tiny"):
        raise ValueError(f"not a diffusion engine: {options.engine!r}")
    device = resolve_device(options.device)
    dtype = resolve_dtype(device, options.extra.get("dtype"))
    preflight(options.acceleration, device)
    if options.engine == "tiny":
        variant = options.model if options.model in TINY_MODELS else "tiny"
        components = load_tiny(use_taesd=options.use_taesd, device=device, model=variant)
        model_id = f"{variant} (random weights, built from config)"
    else:
        variant = None
        model = options.model
        if options.engine == "sdxl-turbo" and model in ("", DEFAULT_MODEL):
            model = DEFAULT_SDXL_MODEL
        taesd = options.extra.get("taesd")  # None: the family's own (TAESD / TAESDXL)
        lcm = options.extra.get("lcm_lora")
        lcm = DEFAULT_LCM_LORA if lcm is True else (lcm or None)
        components = load_pretrained(model, use_taesd=options.use_taesd, taesd=taesd, dtype=dtype, lcm_lora=lcm)
        model_id = model + (f" + {lcm}" if lcm else "")
    engine = DiffusionEngine(components, name=options.engine, model_id=model_id, device=device, dtype=dtype)
    engine.family = detect_family(components.unet.config)
    attach_ip_adapter(engine, options, tiny=variant)
    warmup_size = tuple(options.extra.get("warmup_size", (512, 512)))
    apply_acceleration(engine, options.acceleration, warmup_size, options.extra.get("compile_mode"))
    log.info("diffusion engine %s ready: %s on %s (%s, %s)", engine.name, model_id, device, dtype, options.acceleration)
    return engine


def attach_ip_adapter(engine: DiffusionEngine, options: EngineOptions, tiny: str | None = None) -> None:
    """Load the family's IP-Adapter onto the engine's UNet, or record why image prompts are off.

    Never fails the engine: without an adapter, the engine works and the page shows the reason.
    """
    mode = options.extra.get("ip_adapter", "auto")
    reason = unavailable_reason(engine.family)
    if mode == "off":
        reason = "image prompts are turned off on this server"
    elif options.acceleration in ("xformers", "tensorrt"):
        reason = reason or f"image prompts do not work with --acceleration {options.acceleration} (use none or compile)"
    if reason:
        engine.ip_reason = reason
        return
    try:
        if tiny and mode != "registry":
            encoder = tiny_image_encoder()
            state = tiny_adapter_state(engine.unet, encoder.config.projection_dim)
            engine.ip_adapter = IPAdapter(engine.unet, state, encoder, source="tiny (random, built in-process)")
        else:
            engine.ip_adapter = load_registry_adapter(engine.unet, engine.family)
        engine.ip_reason = None
        log.info("IP-Adapter ready: %s", engine.ip_adapter.source)
    except (EngineUnavailable, AdapterMismatch, OSError, ValueError) as exc:
        engine.ip_reason = f"the IP-Adapter for this model could not be loaded: {exc}"
        log.warning("image prompts off: %s", engine.ip_reason)


def load_registry_adapter(unet: UNet2DConditionModel, family: str) -> IPAdapter:
    """The family's adapter + image encoder through `speakdraw.weights` (local copies first, then the hub).

    Raises EngineUnavailable (offline and not cached, ...) or AdapterMismatch.
    """
    reason = unavailable_reason(family)
    if reason:
        raise AdapterMismatch(reason)
    adapter_name, encoder_name = ADAPTER_WEIGHTS[family]
    adapter_file = registry_folder(adapter_name)
    encoder_folder = registry_folder(encoder_name)
    encoder = CLIPVisionModelWithProjection.from_pretrained(encoder_folder, torch_dtype=unet.dtype)
    return IPAdapter(unet, read_adapter_file(adapter_file), encoder, source=f"{adapter_file} + {encoder_folder}")
