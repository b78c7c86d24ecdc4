"""Load `sd-turbo` (any diffusers SD folder or hub id) or build `tiny`; never hang offline.

Weights resolve in this order: a local folder given as `--model`; for the default
`stabilityai/sd-turbo` and for TAESD, the project's weight registry
(`speakdraw.weights`: env var, our cache, the HF cache, then the hub); for any
other hub id, the HF cache, then the hub. The network is only tried when not
offline (`HF_HUB_OFFLINE` / `SPEAKDRAW_OFFLINE`) and when the hub answers within a
few seconds; downloads show huggingface_hub's progress bars.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from speakdraw.diffusion.architectures import Components, build_components
from speakdraw.diffusion.families import SD15, SDXL, detect_family
from speakdraw.engines.base import EngineUnavailable

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stabilityai/sd-turbo"
DEFAULT_TAESD = "madebyollin/taesd"
DEFAULT_SDXL_MODEL = "stabilityai/sdxl-turbo"  # --engine sdxl-turbo
DEFAULT_TAESDXL = "madebyollin/taesdxl"  # SDXL's default decoder: no fp16 overflow (the SDXL KL VAE has one)
DEFAULT_LCM_LORA = "latent-consistency/lcm-lora-sdv1-5"  # as StreamDiffusion's SD 1.5 examples use
LCM_LORA_FILE = "pytorch_lora_weights.safetensors"
HUB_PROBE_TIMEOUT_S = 3.0
SD_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/*",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)
SDXL_FILES = (
    *SD_FILES,
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "tokenizer_2/*",
)
TAESD_FILES = ("config.json", "diffusion_pytorch_model.safetensors")

# Counts real weight loads (tests: no settings change ever reloads the model).
LOADS = {"sd-turbo": 0, "sdxl-turbo": 0, "tiny": 0}
# `--engine tiny --model tiny-sd15` / `tiny-sdxl`: the SD 1.5- / SDXL-shaped tiny models
TINY_MODELS = ("tiny", "tiny-sd15", "tiny-sdxl", "full-size", "full-size-sdxl")  # random weights, built from config


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineUnavailable("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    return device


def resolve_dtype(device: torch.device, name: str | None = None) -> torch.dtype:
    """fp16 on CUDA, fp32 elsewhere, unless `name` ('float16', 'float32', 'bfloat16') says otherwise."""
    if name:
        dtype = getattr(torch, name, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown dtype {name!r}")
        return dtype
    return torch.float16 if device.type == "cuda" else torch.float32


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "SPEAKDRAW_OFFLINE"))


def hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One HEAD request to the hub endpoint; False on any error or timeout."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout_s)
        return True
    except Exception:  # noqa: BLE001 - DNS, TLS, proxy, timeout: all mean "not now"
        return False


def _no_network_reason() -> str | None:
    if _offline():
        return "offline (HF_HUB_OFFLINE/SPEAKDRAW_OFFLINE is set)"
    if not hub_reachable():
        return "the Hugging Face hub is unreachable"
    return None


def _registry_folder(name: str) -> Path:
    """A weight from speakdraw.weights, checking the local copies before touching the network."""
    from speakdraw import weights

    found = weights.path(name)
    if found is not None:
        return found
    reason = _no_network_reason()
    if reason:
        raise EngineUnavailable(
            f"{name} weights are not available locally and {reason}; run `speakdraw models pull {name}` "
            "where there is network access (or set its path env var), or use --engine tiny/passthrough"
        )
    try:
        return weights.fetch(name)
    except weights.WeightsUnavailable as exc:
        raise EngineUnavailable(str(exc)) from None


registry_folder = _registry_folder  # public: the IP-Adapter loader resolves its weights the same way


def _hub_folder(repo_id: str, patterns: tuple[str, ...]) -> Path:
    """Any other hub repo: the HF cache, else a download when the hub can be reached."""
    import huggingface_hub as hf

    try:
        return Path(hf.snapshot_download(repo_id, allow_patterns=list(patterns), local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (hub raises several kinds)
        pass
    reason = _no_network_reason()
    if reason:
        raise EngineUnavailable(
            f"{repo_id} is not in the Hugging Face cache and {reason}; download it where there is network "
            "access (huggingface-cli download) or pass --model /path/to/folder, or use --engine tiny/passthrough"
        )
    try:
        return Path(hf.snapshot_download(repo_id, allow_patterns=list(patterns)))
    except Exception as exc:  # noqa: BLE001
        raise EngineUnavailable(f"could not download {repo_id}: {type(exc).__name__}: {exc}") from None


def model_folder(model: str, registry_name: str, default_id: str, patterns: tuple[str, ...]) -> Path:
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if model.startswith((".", "/", "~")):
        raise EngineUnavailable(f"model folder {model} does not exist")
    if model == default_id:
        try:
            return _registry_folder(registry_name)
        except ImportError:  # no weight registry in this checkout: straight to the hub cache
            log.debug("speakdraw.weights missing; resolving %s through huggingface_hub", model)
    return _hub_folder(model, patterns)


def check_family(folder: Path) -> str:
    """The model family from `unet/config.json`, before any weight is read."""
    import json

    try:
        config = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineUnavailable(f"{folder} is not a diffusers Stable Diffusion folder: {exc}") from None
    family = detect_family(config)
    if family == SDXL and not (folder / "text_encoder_2" / "config.json").is_file():
        raise EngineUnavailable(f"{folder} is an SDXL UNet without SDXL's second text encoder (text_encoder_2)")
    return family


def lora_source(lcm_lora: str) -> tuple[str, str]:
    """(folder, weight file name) of an LCM-LoRA given as a file, a folder or a hub id (HF cache, then hub)."""
    path = Path(lcm_lora).expanduser()
    if path.is_file():
        return str(path.parent), path.name
    if path.is_dir():
        return str(path), LCM_LORA_FILE
    if lcm_lora.startswith((".", "/", "~")):
        raise EngineUnavailable(f"LCM-LoRA {lcm_lora} does not exist")
    return str(_hub_folder(lcm_lora, (LCM_LORA_FILE,))), LCM_LORA_FILE


def fuse_lcm_lora(sd_pipe, lcm_lora: str, family: str) -> None:
    """Load an LCM-LoRA into the pipeline's UNet and fuse it (no per-frame LoRA cost)."""
    if family != SD15:
        raise EngineUnavailable(f"LCM-LoRA {lcm_lora} is for SD 1.5-family models; the loaded model is {family}")
    folder, weight_name = lora_source(lcm_lora)
    try:
        sd_pipe.load_lora_weights(folder, weight_name=weight_name)
        sd_pipe.fuse_lora()
    except Exception as exc:  # noqa: BLE001 - a bad LoRA file must not kill the server
        raise EngineUnavailable(f"could not apply LCM-LoRA {lcm_lora}: {type(exc).__name__}: {exc}") from None
    log.info("fused LCM-LoRA %s", lcm_lora)


def load_pretrained(
    model: str, *, use_taesd: bool, taesd: str | None, dtype: torch.dtype, lcm_lora: str | None = None
) -> Components:
    """A diffusers SD / SDXL folder (+ TAESD / TAESDXL, + a fused LCM-LoRA) as Components, in `dtype` on the CPU.

    The family comes from the folder's `unet/config.json`; `taesd` None picks the family's
    default tiny autoencoder (TAESDXL for SDXL). Without TAESD an SDXL model in fp16 keeps
    its own KL VAE, which overflows in fp16: the loader refuses that combination.
    """
    from diffusers import AutoencoderTiny, StableDiffusionPipeline, StableDiffusionXLPipeline

    sdxl_default = model == DEFAULT_SDXL_MODEL
    if sdxl_default:
        folder = model_folder(model, "sdxl-turbo", DEFAULT_SDXL_MODEL, SDXL_FILES)
    else:
        folder = model_folder(model, "sd-turbo", DEFAULT_MODEL, SDXL_FILES)  # any hub id may be SDXL
    family = check_family(folder)
    if family == SDXL and not use_taesd and dtype == torch.float16:
        raise EngineUnavailable(
            "SDXL's own VAE overflows in float16 (black/NaN frames); keep TAESDXL (drop --no-taesd) or run float32"
        )
    if taesd is None:
        taesd = DEFAULT_TAESDXL if family == SDXL else DEFAULT_TAESD
    taesd_registry = "taesdxl" if taesd == DEFAULT_TAESDXL else "taesd"
    default_taesd = DEFAULT_TAESDXL if taesd_registry == "taesdxl" else DEFAULT_TAESD
    taesd_folder = model_folder(taesd, taesd_registry, default_taesd, TAESD_FILES) if use_taesd else None
    try:
        if family == SDXL:
            sd_pipe = StableDiffusionXLPipeline.from_pretrained(
                folder, torch_dtype=dtype, add_watermarker=False, local_files_only=True
            )
        else:
            sd_pipe = StableDiffusionPipeline.from_pretrained(
                folder,
                torch_dtype=dtype,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
                local_files_only=True,
            )
        vae = AutoencoderTiny.from_pretrained(taesd_folder, torch_dtype=dtype) if taesd_folder else sd_pipe.vae
    except Exception as exc:  # noqa: BLE001 - a broken folder must not kill the server
        raise EngineUnavailable(f"could not load {folder}: {type(exc).__name__}: {exc}") from None
    if lcm_lora:
        fuse_lcm_lora(sd_pipe, lcm_lora, family)
    LOADS["sdxl-turbo" if family == SDXL else "sd-turbo"] += 1
    return Components(
        sd_pipe.unet,
        vae,
        sd_pipe.text_encoder,
        sd_pipe.tokenizer,
        sd_pipe.scheduler,
        getattr(sd_pipe, "text_encoder_2", None),
        getattr(sd_pipe, "tokenizer_2", None),
    )


def load_tiny(*, use_taesd: bool, device: torch.device, model: str = "tiny") -> Components:
    """`model` 'tiny-sd15' / 'tiny-sdxl' build the SD 1.5- / SDXL-shaped tiny models; else the SD 2.x-shaped one."""
    LOADS["tiny"] += 1
    return build_components(model if model in TINY_MODELS else "tiny", use_taesd=use_taesd, device=device)
