"""IP-Adapter image prompts inside the stream batch, with per-session image and scale.

How it fits StreamDiffusion (diffusers 0.24 semantics, shared modules):

- The image is encoded once per change: CLIP vision encoder (`CLIPVisionModelWithProjection`)
  → `image_embeds` → the adapter's `ImageProjection` → N (4) tokens of the UNet's
  cross-attention width. The "unconditional" tokens (for CFG rows) are the projection of
  zero embeds, as diffusers' pipelines do; they are computed once at load.
- The tokens are joined after the 77 text tokens in the session's cached `prompt_embeds`
  (`stream_state.layout_embeds`), so a frame costs one more small attention per
  cross-attention layer and nothing else.
- The UNet's cross-attention processors are replaced once, at load, by `StreamIPAttnProcessor`
  (diffusers' `IPAdapterAttnProcessor2_0` weights and maths). It is shared by every session,
  so it holds no per-session state: the scale comes with each UNet call in
  `cross_attention_kwargs={"ip_scale": ...}` (see `step.run_unet`: one value per UNet row,
  so a batch of calls carries each call's own scale), and a call without it (no session
  with an image prompt) runs plain attention over all tokens, exactly like
  `AttnProcessor2_0`. One session's image or scale therefore never reaches another.

Families (`detect_family`): IP-Adapter has official weights for SD 1.5 (`h94/IP-Adapter`,
`models/ip-adapter_sd15.bin` + ViT-H `models/image_encoder`) and SDXL, none for SD 2.x
(which SD-Turbo is). This engine supports SD 1.5-family models; others get a reason.
The adapter file format is the original one: `{"image_proj": {proj.weight, proj.bias,
norm.weight, norm.bias}, "ip_adapter": {"1.to_k_ip.weight", "1.to_v_ip.weight", "3...."}}`,
keys numbered over the UNet's attention processors in diffusers' order (odd = cross-attention).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import ImageProjection
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

log = logging.getLogger(__name__)

NUM_TOKENS = 4  # ip-adapter_sd15.bin projects to 4 tokens

# A tiny CLIP vision tower with ViT-H's layout (pre-LN ViT + projection), for tests and CI.
TINY_VISION: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "image_size": 32,
    "patch_size": 8,
    "projection_dim": 32,
    "hidden_act": "gelu",
}


class AdapterMismatch(ValueError):
    """An adapter state dict that does not fit this UNet or image encoder (the message says how)."""


# ----------------------------------------------------------------------------- attention


class StreamIPAttnProcessor(IPAdapterAttnProcessor2_0):
    """Cross-attention with optional image tokens; the scale comes per call, never from shared state.

    `ip_scale=None` (no image prompt in this session): plain SDPA attention over every
    token, the same computation as `AttnProcessor2_0`. Otherwise the last `num_tokens`
    tokens are the image's: `out = attn(text) + ip_scale * attn(image)`, as in
    diffusers' `IPAdapterAttnProcessor2_0`.
    """

    def __call__(  # type: ignore[override]
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        scale: float = 1.0,
        ip_scale: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        if ip_scale is None or encoder_hidden_states is None:
            return _PLAIN(attn, hidden_states, encoder_hidden_states, attention_mask, temb, scale)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size = encoder_hidden_states.shape[0]
        if attention_mask is not None:
            raise ValueError("attention masks are not used with image prompts")
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        end = encoder_hidden_states.shape[1] - self.num_tokens
        text, image = encoder_hidden_states[:, :end], encoder_hidden_states[:, end:]
        key, value = attn.to_k(text), attn.to_v(text)
        head_dim = key.shape[-1] // attn.heads

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)

        q = heads(query)
        out = F.scaled_dot_product_attention(q, heads(key), heads(value), dropout_p=0.0, is_causal=False)
        ip_out = F.scaled_dot_product_attention(
            q, heads(self.to_k_ip(image)), heads(self.to_v_ip(image)), dropout_p=0.0, is_causal=False
        )
        out = out + ip_scale * ip_out
        hidden_states = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class SelfAttnProcessor(AttnProcessor2_0):
    """`AttnProcessor2_0` that accepts (and ignores) `ip_scale`: the UNet hands its kwargs to every attention."""

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, scale=1.0, ip_scale=None
    ):  # type: ignore[override]  # noqa: E501
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, scale)


_PLAIN = AttnProcessor2_0()


# ----------------------------------------------------------------------------- loading


def cross_attention_layers(unet: UNet2DConditionModel) -> list[tuple[str, int, int]]:
    """(processor name, hidden size, cross-attention width) of each cross-attention, with its adapter key id.

    Same walk and numbering as diffusers' `_load_ip_adapter_weights`: processors in
    `unet.attn_processors` order, every cross-attention (`attn2`) takes the next odd id.
    """
    cfg = unet.config
    out = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor") or "motion_modules" in name:
            continue
        if name.startswith("mid_block"):
            hidden = cfg.block_out_channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(cfg.block_out_channels))[int(name[len("up_blocks.")])]
        else:
            hidden = cfg.block_out_channels[int(name[len("down_blocks.")])]
        out.append((name, hidden, cfg.cross_attention_dim))
    return out


def read_adapter_file(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """`ip-adapter_*.bin` (torch pickle, loaded weights-only) or `.safetensors` (prefixed keys)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        state: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a dict
                group, _, rest = key.partition(".")
                if group in state:
                    state[group][rest] = f.get_tensor(key)
        return state
    return torch.load(path, map_location="cpu", weights_only=True)


def _check_keys(state: Mapping[str, Any]) -> None:
    if sorted(state.keys()) != ["image_proj", "ip_adapter"]:
        raise AdapterMismatch(f"an IP-Adapter state dict has 'image_proj' and 'ip_adapter'; got {sorted(state)}")
    missing = {"proj.weight", "proj.bias", "norm.weight", "norm.bias"} - set(state["image_proj"])
    if missing:
        raise AdapterMismatch(f"image_proj lacks {sorted(missing)} (only the plain IP-Adapter is supported)")


@dataclass
class ImagePrompt:
    """One encoded image: (1, N, D) tokens for the conditional rows and for the CFG rows."""

    cond: torch.Tensor
    uncond: torch.Tensor


class IPAdapter:
    """The loaded adapter: image encoder + projection on the engine's device; processors installed on the UNet."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        state: Mapping[str, Mapping[str, torch.Tensor]],
        image_encoder: CLIPVisionModelWithProjection,
        *,
        source: str,
    ) -> None:
        _check_keys(state)
        device, dtype = unet.device, unet.dtype
        proj = state["image_proj"]
        clip_dim = proj["proj.weight"].shape[-1]
        width = proj["proj.weight"].shape[0] // NUM_TOKENS
        if width != unet.config.cross_attention_dim:
            raise AdapterMismatch(
                f"the adapter projects to width {width}, the UNet's cross-attention is "
                f"{unet.config.cross_attention_dim} wide: it was made for another model family"
            )
        encoder_dim = image_encoder.config.projection_dim
        if encoder_dim != clip_dim:
            raise AdapterMismatch(f"the adapter takes {clip_dim}-wide image embeds, the encoder gives {encoder_dim}")
        self.projection = ImageProjection(clip_dim, width, num_image_text_embeds=NUM_TOKENS)
        self.projection.load_state_dict(
            {
                "image_embeds.weight": proj["proj.weight"],
                "image_embeds.bias": proj["proj.bias"],
                "norm.weight": proj["norm.weight"],
                "norm.bias": proj["norm.bias"],
            }
        )
        self.projection.to(device=device, dtype=dtype).eval().requires_grad_(False)
        procs: dict[str, Any] = {name: SelfAttnProcessor() for name in unet.attn_processors}
        weights = state["ip_adapter"]
        for key_id, (name, hidden, cross) in enumerate(cross_attention_layers(unet)):
            proc = StreamIPAttnProcessor(hidden_size=hidden, cross_attention_dim=cross, num_tokens=NUM_TOKENS)
            prefix = f"{2 * key_id + 1}."
            try:
                proc.load_state_dict({k: weights[prefix + k] for k in ("to_k_ip.weight", "to_v_ip.weight")})
            except (KeyError, RuntimeError) as exc:
                raise AdapterMismatch(f"adapter weights do not fit {name}: {type(exc).__name__}: {exc}") from None
            procs[name] = proc.to(device=device, dtype=dtype).requires_grad_(False)
        extra = len(weights) - 2 * len(cross_attention_layers(unet))
        if extra:
            raise AdapterMismatch(f"the adapter has {extra} more weights than this UNet has cross-attentions")
        unet.set_attn_processor(procs)
        self.image_encoder = image_encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
        size = image_encoder.config.image_size
        self.processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        self.device, self.dtype, self.source = device, dtype, source
        self.encodes = 0  # image-encoder runs (tests: a scale change never re-encodes)
        with torch.no_grad():
            zeros = torch.zeros(1, clip_dim, device=device, dtype=dtype)
            self._uncond = self.projection(zeros)

    @torch.no_grad()
    def encode(self, rgb: np.ndarray) -> ImagePrompt:
        """HxWx3 uint8 → the image's tokens: CLIP preprocessing, vision tower, projection."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 image, got {rgb.dtype} {rgb.shape}")
        pixels = self.processor(images=rgb, return_tensors="pt").pixel_values
        embeds = self.image_encoder(pixels.to(self.device, self.dtype)).image_embeds
        self.encodes += 1
        return ImagePrompt(self.projection(embeds), self._uncond)


def tiny_image_encoder(seed: int = 0) -> CLIPVisionModelWithProjection:
    """A random CLIP vision tower from `TINY_VISION`, seeded inside a forked RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_VISION)).eval()


def tiny_adapter_state(unet: UNet2DConditionModel, clip_dim: int, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Random adapter weights for `unet`, in the file format of `ip-adapter_sd15.bin` (default nn inits)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        width = unet.config.cross_attention_dim
        proj = ImageProjection(clip_dim, width, num_image_text_embeds=NUM_TOKENS)
        torch.nn.init.normal_(proj.norm.weight, 1.0, 0.2)  # LayerNorm inits to 1/0: give it something to carry
        torch.nn.init.normal_(proj.norm.bias, 0.0, 0.2)
        state: dict[str, dict[str, torch.Tensor]] = {
            "image_proj": {
                "proj.weight": proj.image_embeds.weight.detach().clone(),
                "proj.bias": proj.image_embeds.bias.detach().clone(),
                "norm.weight": proj.norm.weight.detach().clone(),
                "norm.bias": proj.norm.bias.detach().clone(),
            },
            "ip_adapter": {},
        }
        for key_id, (_, hidden, cross) in enumerate(cross_attention_layers(unet)):
            layer = IPAdapterAttnProcessor2_0(hidden_size=hidden, cross_attention_dim=cross)
            for k, v in layer.state_dict().items():
                state["ip_adapter"][f"{2 * key_id + 1}.{k}"] = v.detach().clone()
    return state
