"""Model families (SD 1.5, SD 2.x, SDXL): told apart from configs alone, before any weight is read.

Its own module so that loading (refuses what it cannot run) and the IP-Adapter (which
family has which adapter) share it without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SD15, SD2, SDXL = "sd15", "sd2", "sdxl"
FAMILY_NAMES = {SD15: "SD 1.5", SD2: "SD 2.x", SDXL: "SDXL"}
# registry names (speakdraw.weights) of the adapter + image encoder each family can use
# (SDXL: h94/IP-Adapter `sdxl_models/ip-adapter_sdxl_vit-h`, which takes the same ViT-H encoder as SD 1.5)
ADAPTER_WEIGHTS = {
    SD15: ("ip-adapter-sd15", "ip-adapter-image-encoder"),
    SDXL: ("ip-adapter-sdxl", "ip-adapter-image-encoder"),
}


def detect_family(unet_config: Mapping[str, Any], text_config: Any = None) -> str:
    """'sd15', 'sd2' or 'sdxl' from a UNet config (and the text encoder's, when given).

    Full-size models are told apart by their cross-attention width (768 = CLIP ViT-L,
    SD 1.x; 1024 = OpenCLIP ViT-H, SD 2.x; 2048 = SDXL's two encoders) and SDXL's
    `text_time` added embedding. Models with another width (the tiny test models) go by
    the remaining structural difference: SD 2.x UNets project into their transformers
    with a linear layer (`use_linear_projection`), SD 1.x with a 1x1 conv.
    """
    width = unet_config.get("cross_attention_dim")
    if isinstance(width, (list, tuple)):
        width = width[0]
    if unet_config.get("addition_embed_type") == "text_time" or width == 2048:
        return SDXL
    if width == 768:
        return SD15
    if width == 1024:
        return SD2
    return SD2 if unet_config.get("use_linear_projection") else SD15


def unavailable_reason(family: str) -> str | None:
    """Why a family has no image prompts in this engine (None when it has)."""
    if family in ADAPTER_WEIGHTS:
        return None
    name = FAMILY_NAMES.get(family, family)
    if family == SD2:
        return (
            f"the loaded model is {name} (sd-turbo is SD 2.1): IP-Adapter has no official weights for it; "
            "image prompts need an SD 1.5-family model (e.g. --model <SD 1.5 id or folder>) "
            "or SDXL (--engine sdxl-turbo)"
        )
    return f"image prompts are not supported for {name} models in this engine; use an SD 1.5-family or SDXL model"
