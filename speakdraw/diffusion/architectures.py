"""Diffusion modules built from config in-process: the `tiny` engine and the full-size bench model.

`tiny` is a few-hundred-kB UNet / VAE / CLIP text encoder with the same classes and
the same layout as SD-Turbo (8x VAE downsampling, 77-token prompts), so it runs the
engine's real code path on CPU in milliseconds. `full_size` is the published SD-Turbo
architecture (SD 2.1 UNet, OpenCLIP-H text encoder, TAESD) with random weights: the
same FLOPs as the real model, for benchmarks where the hub weights cannot be had.
Both are seeded, so two builds give identical weights.

One exception to "random": the tiny TAESD gets hand-set weights that make it an 8x8
average-pooling encoder and a nearest-upsampling decoder (latents = RGB in [-1, 1]).
A random autoencoder reconstructs nothing, so every tiny output would be unrelated
to the camera; with this one the tiny engine's output is a pixelated picture of the
input that the random UNet pushes away from it as `strength` rises, which the tests
can measure in pixels and a person can see. (`--no-taesd` keeps a random tiny KL VAE.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.models.unet_2d_blocks import AutoencoderTinyBlock
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from speakdraw.diffusion.tokenizer import BOS, EOS, char_clip_tokenizer, char_vocab

# stabilityai/sd-turbo scheduler/scheduler_config.json (EulerDiscrete, trailing spacing).
SD_TURBO_SCHEDULER: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "timestep_type": "discrete",
    "use_karras_sigmas": False,
}

# SD 2.1-base UNet, which SD-Turbo distils (unet/config.json).
# What the SD 2.1 and SDXL UNets of the published configs share.
_UNET_COMMON: dict[str, Any] = {
    "act_fn": "silu",
    "center_input_sample": False,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "use_linear_projection": True,
}

SD21_UNET: dict[str, Any] = {
    **_UNET_COMMON,
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "dual_cross_attention": False,
    "only_cross_attention": False,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

# OpenCLIP ViT-H/14 text tower as SD 2.x ships it (penultimate layer kept: 23 layers).
OPENCLIP_H_TEXT: dict[str, Any] = {
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "projection_dim": 512,
    "vocab_size": 49408,
}

# madebyollin/taesd config.json (AutoencoderTiny defaults).
TAESD: dict[str, Any] = {
    "act_fn": "relu",
    "decoder_block_out_channels": [64, 64, 64, 64],
    "encoder_block_out_channels": [64, 64, 64, 64],
    "in_channels": 3,
    "latent_channels": 4,
    "latent_magnitude": 3,
    "latent_shift": 0.5,
    "num_decoder_blocks": [3, 3, 3, 1],
    "num_encoder_blocks": [1, 3, 3, 3],
    "out_channels": 3,
    "scaling_factor": 1.0,
    "upsampling_scaling_factor": 2,
}

TINY_UNET: dict[str, Any] = {
    **SD21_UNET,
    "attention_head_dim": [2, 4],
    "block_out_channels": [32, 64],
    "cross_attention_dim": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "layers_per_block": 1,
    "sample_size": 8,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}

TINY_TEXT: dict[str, Any] = {
    **OPENCLIP_H_TEXT,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "projection_dim": 32,
}

TINY_TAESD: dict[str, Any] = {
    **TAESD,
    "decoder_block_out_channels": [8, 8, 8, 8],
    "encoder_block_out_channels": [8, 8, 8, 8],
    "num_decoder_blocks": [1, 1, 1, 1],
    "num_encoder_blocks": [1, 1, 1, 1],
}

# SD 1.5-shaped tiny model (`--engine tiny --model tiny-sd15`): SD 1.x UNets project into their
# transformers with 1x1 convs and take an int head count; their text encoder is CLIP ViT-L (quick_gelu).
# Used where the SD 1.5 family matters: IP-Adapter image prompts (speakdraw.diffusion.ip_adapter).
TINY_SD15_UNET: dict[str, Any] = {**TINY_UNET, "attention_head_dim": 4, "use_linear_projection": False}
TINY_SD15_TEXT: dict[str, Any] = {**TINY_TEXT, "hidden_act": "quick_gelu"}
# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json (PNDM; StreamDiffusion only reads the betas)
SD15_SCHEDULER: dict[str, Any] = {**SD_TURBO_SCHEDULER, "timestep_spacing": "leading"}

# ---- SDXL (`--engine sdxl-turbo`; `--engine tiny --model tiny-sdxl`) --------------------------------
# stabilityai/sdxl-turbo unet/config.json (the SDXL base UNet: 3 levels, 10 transformer layers at the
# lowest, cross-attention 2048 = CLIP ViT-L 768 + OpenCLIP bigG 1280, `text_time` added embedding:
# pooled bigG embeds (1280) + 6 time ids x 256 = 2816).
SDXL_UNET: dict[str, Any] = {
    **_UNET_COMMON,
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "projection_class_embeddings_input_dim": 2816,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
}
# text_encoder (CLIP ViT-L/14) and text_encoder_2 (OpenCLIP ViT-bigG/14, with projection) of SDXL
CLIP_L_TEXT: dict[str, Any] = {
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
    "vocab_size": 49408,
}
OPENCLIP_BIGG_TEXT: dict[str, Any] = {
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
    "vocab_size": 49408,
}
# stabilityai/sdxl-turbo scheduler (EulerAncestral, trailing); StreamDiffusion only reads the betas
SDXL_TURBO_SCHEDULER: dict[str, Any] = {**SD_TURBO_SCHEDULER, "timestep_spacing": "trailing"}
# madebyollin/taesdxl has TAESD's architecture (AutoencoderTiny), trained on SDXL's latent space
TAESDXL: dict[str, Any] = dict(TAESD)

# Tiny SDXL-shaped model: the same block layout (no attention at the top level, 2 transformer layers
# at the lowest), two text encoders of width 32 each (cross-attention 64), pooled width 32 +
# 6 time ids x 8 = 80 added-embedding inputs.
TINY_SDXL_UNET: dict[str, Any] = {
    **SDXL_UNET,
    "addition_time_embed_dim": 8,
    "attention_head_dim": [2, 4],
    "block_out_channels": [32, 64],
    "cross_attention_dim": 64,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "layers_per_block": 1,
    "projection_class_embeddings_input_dim": 80,
    "sample_size": 8,
    "transformer_layers_per_block": [1, 2],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
}
TINY_SDXL_TEXT: dict[str, Any] = {**TINY_TEXT, "hidden_act": "quick_gelu"}
TINY_SDXL_TEXT_2: dict[str, Any] = dict(TINY_TEXT)

TINY_KINDS = ("tiny", "tiny-sd15", "tiny-sdxl")
KINDS = (*TINY_KINDS, "full-size", "full-size-sdxl")

# Four blocks, so it downsamples 8x like SD's VAE.
TINY_VAE_KL: dict[str, Any] = {
    "block_out_channels": [32, 32, 32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}


@dataclass
class Components:
    """The modules one diffusion engine shares between all its sessions."""

    unet: UNet2DConditionModel
    vae: AutoencoderTiny | AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: EulerDiscreteScheduler
    # SDXL only: the second (projected, pooled) text encoder and its tokenizer
    text_encoder_2: CLIPTextModelWithProjection | None = None
    tokenizer_2: CLIPTokenizer | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Components:
        for module in (self.unet, self.vae, self.text_encoder, self.text_encoder_2):
            if module is not None:
                module.to(device=device, dtype=dtype).eval().requires_grad_(False)
        return self

    def pipeline(self, cls: type[DiffusionPipeline] | None = None, **replace: Any) -> DiffusionPipeline:
        """A diffusers pipeline over these modules (SD: no safety checker; SDXL: no watermark).

        `cls` defaults to `StableDiffusionPipeline`, or `StableDiffusionXLPipeline` for SDXL
        components; `replace` swaps some modules (e.g. unet=...).
        """
        modules = {
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "tokenizer": self.tokenizer,
            "unet": self.unet,
            "scheduler": self.scheduler,
        }
        if self.text_encoder_2 is not None:
            modules.update(text_encoder_2=self.text_encoder_2, tokenizer_2=self.tokenizer_2, **replace)
            return (cls or StableDiffusionXLPipeline)(
                **modules, force_zeros_for_empty_prompt=True, add_watermarker=False
            )
        modules.update(replace)
        return (cls or StableDiffusionPipeline)(
            **modules, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )


def _identity_taps(conv: torch.nn.Conv2d, pairs: dict[int, int], scale: float = 1.0) -> None:
    """Centre tap `scale` from input channel to output channel for each (out: in) pair; all else 0."""
    conv.weight.zero_()
    centre = conv.kernel_size[0] // 2
    for out_ch, in_ch in pairs.items():
        conv.weight[out_ch, in_ch, centre, centre] = scale
    if conv.bias is not None:
        conv.bias.zero_()


@torch.no_grad()
def make_pixelating(vae: AutoencoderTiny) -> AutoencoderTiny:
    """Set an AutoencoderTiny's weights to 8x average pooling / nearest upsampling (see module doc)."""
    rgb = {0: 0, 1: 1, 2: 2}
    convs = [m for m in vae.encoder.layers if isinstance(m, torch.nn.Conv2d)]
    _identity_taps(convs[0], rgb)  # image in [0, 1] into channels 0..2
    for down in convs[1:-1]:  # stride-2 3x3 convs: taps (1..2, 1..2) are exactly a 2x2 average
        down.weight.zero_()
        for c in range(3):
            down.weight[c, c, 1:, 1:] = 0.25
    last = convs[-1]
    _identity_taps(last, rgb, 2.0)  # latent = 2 * rgb - 1; channel 3 = 2 * grey - 1
    last.weight[3, :3, 1, 1] = 2.0 / 3.0
    last.bias.fill_(-1.0)
    first = vae.decoder.layers[0]
    _identity_taps(first, rgb, 0.5)  # back to [0, 1] (the ReLU after it clips below 0)
    first.bias[:3] = 0.5
    for module in vae.decoder.layers[1:]:
        if isinstance(module, torch.nn.Conv2d):
            _identity_taps(module, rgb)
    for block in list(vae.encoder.layers) + list(vae.decoder.layers):
        if isinstance(block, AutoencoderTinyBlock):  # residual branch off: block(x) = relu(x) = x
            for conv in block.conv:
                if isinstance(conv, torch.nn.Conv2d):
                    conv.weight.zero_()
                    conv.bias.zero_()
    return vae


def _text_encoder(config: dict[str, Any], cls: type = CLIPTextModel) -> CLIPTextModel:
    vocab = char_vocab()
    cfg = CLIPTextConfig(**config, bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS])
    return cls(cfg)


def _build_sdxl(tiny: bool, use_taesd: bool) -> Components:
    """SDXL modules (inside build_components' seeded RNG and device context)."""
    if not use_taesd:
        raise ValueError("the SDXL models are built with TAESDXL only (the KL VAE config is not wired)")
    unet = UNet2DConditionModel(**(TINY_SDXL_UNET if tiny else SDXL_UNET))
    vae = AutoencoderTiny(**(TINY_TAESD if tiny else TAESDXL))
    if tiny:
        make_pixelating(vae)
    text_encoder = _text_encoder(TINY_SDXL_TEXT if tiny else CLIP_L_TEXT)
    text_encoder_2 = _text_encoder(TINY_SDXL_TEXT_2 if tiny else OPENCLIP_BIGG_TEXT, CLIPTextModelWithProjection)
    with torch.device("cpu"):  # the scheduler's tables go through numpy
        scheduler = EulerDiscreteScheduler.from_config(SDXL_TURBO_SCHEDULER)
    return Components(unet, vae, text_encoder, char_clip_tokenizer(), scheduler, text_encoder_2, char_clip_tokenizer())


def build_components(
    kind: str = "tiny", *, use_taesd: bool = True, seed: int = 0, device: str | torch.device = "cpu"
) -> Components:
    """Random-weight modules from config: `kind` is 'tiny', 'tiny-sd15', 'tiny-sdxl', 'full-size' or 'full-size-sdxl'.

    Seeded inside a forked RNG, so the global torch RNG is left as it was. `device`
    is where the weights are initialised (a GPU builds the full-size model in a
    second, a CPU takes ~20 s); the same seed gives the same weights on one device.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown architecture {kind!r}; use one of {', '.join(KINDS)}")
    tiny = kind in TINY_KINDS
    sd15 = kind == "tiny-sd15"
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(seed)
        if kind in ("tiny-sdxl", "full-size-sdxl"):
            return _build_sdxl(tiny, use_taesd)
        unet = UNet2DConditionModel(**(TINY_SD15_UNET if sd15 else TINY_UNET if tiny else SD21_UNET))
        if use_taesd:
            vae: AutoencoderTiny | AutoencoderKL = AutoencoderTiny(**(TINY_TAESD if tiny else TAESD))
            if tiny:
                make_pixelating(vae)
        elif tiny:
            vae = AutoencoderKL(**TINY_VAE_KL)
        else:
            raise ValueError("the full-size bench model is built with TAESD only (the KL VAE config is not wired)")
        text_encoder = _text_encoder(TINY_SD15_TEXT if sd15 else TINY_TEXT if tiny else OPENCLIP_H_TEXT)
    scheduler = EulerDiscreteScheduler.from_config(SD15_SCHEDULER if sd15 else SD_TURBO_SCHEDULER)
    return Components(unet, vae, text_encoder, char_clip_tokenizer(), scheduler)
