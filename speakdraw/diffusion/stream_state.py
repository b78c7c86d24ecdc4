"""StreamDiffusion's `prepare()`, split so a settings change redoes only its own part.

`StreamDiffusion.prepare` re-encodes the prompt, redraws the noise and rebuilds the
timestep tables in one go (and defaults to a generator shared by every caller). These
functions set the same attributes on a `StreamDiffusion` object, piece by piece:

| change                       | redone                                     |
|------------------------------|--------------------------------------------|
| prompt / negative prompt     | text encoding of that text (then `layout_embeds`) |
| guidance_scale, delta        | `set_guidance` + `layout_embeds` (no encoding) |
| strength                     | `set_schedule` (timestep tables only)      |
| seed                         | `set_noise` (generator, init noise, buffers) |
| steps, cfg_type, frame size  | a new StreamDiffusion object over the same modules (no text encoding) |
| image prompt (IP-Adapter)    | one image encoding, then `layout_embeds` (tokens joined to the text's) |
| ip_adapter_scale             | nothing: the scale goes with each UNet call (`step.run_unet`) |

`tests/test_diffusion_engine.py` checks that the pieces give exactly what `prepare()` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from streamdiffusion import StreamDiffusion

# StreamDiffusion's LCM schedule length: t_index_list entries index into these timesteps.
NUM_INFERENCE_STEPS = 50


def t_index_list(strength: float, steps: int, n: int = NUM_INFERENCE_STEPS) -> list[int]:
    """Map img2img `strength` (0 = keep the input, 1 = pure noise) to `steps` distinct indices.

    The first index is the noise level the camera frame is pushed to (index 0 is
    t=999, index n-1 the smallest timestep); the rest are spread evenly below it,
    like diffusers img2img spreads its steps over the last `strength` of the schedule.
    """
    if not 1 <= steps <= n:
        raise ValueError(f"steps must be in 1..{n}")
    start = min(round((1.0 - strength) * (n - 1)), n - steps)
    return [start + (i * (n - start)) // steps for i in range(steps)]


def set_schedule(stream: StreamDiffusion, t_list: list[int]) -> None:
    """Timestep tables for `t_list` (len must equal the stream's denoising_steps_num)."""
    if len(t_list) != stream.denoising_steps_num:
        raise ValueError("t_list length differs from the stream batch; build a new stream")
    stream.t_list = list(t_list)
    scheduler = stream.scheduler
    device, dtype = stream.device, stream.dtype
    scheduler.set_timesteps(NUM_INFERENCE_STEPS, device)
    stream.timesteps = scheduler.timesteps.to(device)
    stream.sub_timesteps = [stream.timesteps[t] for t in stream.t_list]
    repeats = stream.frame_bff_size if stream.use_denoising_batch else 1
    sub = torch.tensor(stream.sub_timesteps, dtype=torch.long, device=device)
    stream.sub_timesteps_tensor = torch.repeat_interleave(sub, repeats=repeats, dim=0)

    scalings = [scheduler.get_scalings_for_boundary_condition_discrete(t) for t in stream.sub_timesteps]
    shape = (len(stream.t_list), 1, 1, 1)
    stream.c_skip = torch.stack([c for c, _ in scalings]).view(shape).to(dtype=dtype, device=device)
    stream.c_out = torch.stack([c for _, c in scalings]).view(shape).to(dtype=dtype, device=device)
    alphas = scheduler.alphas_cumprod
    alpha = torch.stack([alphas[t].sqrt() for t in stream.sub_timesteps]).view(shape)
    beta = torch.stack([(1 - alphas[t]).sqrt() for t in stream.sub_timesteps]).view(shape)
    stream.alpha_prod_t_sqrt = torch.repeat_interleave(alpha.to(dtype=dtype, device=device), repeats=repeats, dim=0)
    stream.beta_prod_t_sqrt = torch.repeat_interleave(beta.to(dtype=dtype, device=device), repeats=repeats, dim=0)


def set_noise(stream: StreamDiffusion, seed: int, generator: torch.Generator) -> None:
    """Reseed: the generator (VAE sampling), the stream's fixed noise, and the latent buffers."""
    stream.generator = generator
    generator.manual_seed(seed)
    latent = (4, stream.latent_height, stream.latent_width)
    if stream.denoising_steps_num > 1:
        rows = (stream.denoising_steps_num - 1) * stream.frame_bff_size
        stream.x_t_latent_buffer = torch.zeros((rows, *latent), dtype=stream.dtype, device=stream.device)
    else:
        stream.x_t_latent_buffer = None
    stream.init_noise = torch.randn((stream.batch_size, *latent), generator=generator).to(
        device=stream.device, dtype=stream.dtype
    )
    stream.stock_noise = torch.zeros_like(stream.init_noise)


def set_guidance(stream: StreamDiffusion, guidance_scale: float, delta: float) -> None:
    stream.guidance_scale = 1.0 if stream.cfg_type == "none" else guidance_scale
    stream.delta = delta


@dataclass(frozen=True)
class TextEmbeds:
    """One prompt's encoding: (1, 77, D) tokens, and SDXL's (1, P) pooled embedding (None for SD 1.x/2.x)."""

    tokens: torch.Tensor
    pooled: torch.Tensor | None = None

    def lerp(self, target: TextEmbeds, weight: float) -> TextEmbeds:
        """The prompt fade: both parts move together."""
        pooled = None if self.pooled is None else torch.lerp(self.pooled, target.pooled, weight)
        return TextEmbeds(torch.lerp(self.tokens, target.tokens, weight), pooled)


def sdxl_time_ids(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """SDXL's micro-conditioning for a frame: original size, crop (0, 0), target size, as diffusers' img2img.

    (`requires_aesthetics_score` is False for SDXL-Turbo and the base model, so no score.)
    """
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=dtype, device=device)


def layout_embeds(
    stream: StreamDiffusion,
    cond: TextEmbeds | torch.Tensor,
    uncond: TextEmbeds | torch.Tensor,
    image: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """Lay one prompt's (1, 77, D) embeddings out over the stream batch, as `prepare()` does.

    `image` = (cond, uncond) (1, N, D) IP-Adapter tokens, joined after the text tokens of
    the conditional and the unconditional (CFG) rows respectively. SDXL prompts (with a
    pooled embedding) also get `stream.added_cond`: `text_embeds` and `time_ids` per row,
    in the same row order, for `added_cond_kwargs` on every UNet call (else it is None).
    """
    if isinstance(cond, torch.Tensor):
        cond = TextEmbeds(cond)
    if isinstance(uncond, torch.Tensor):
        uncond = TextEmbeds(uncond)
    cond_tokens, uncond_tokens = cond.tokens, uncond.tokens
    if image is not None:
        cond_tokens = torch.cat([cond_tokens, image[0].to(cond_tokens.dtype)], dim=1)
        uncond_tokens = torch.cat([uncond_tokens, image[1].to(uncond_tokens.dtype)], dim=1)
    embeds = cond_tokens.repeat(stream.batch_size, 1, 1)
    pooled = None if cond.pooled is None else cond.pooled.repeat(stream.batch_size, 1)
    if stream.guidance_scale > 1.0 and stream.cfg_type in ("initialize", "full"):
        rows = stream.batch_size if stream.use_denoising_batch and stream.cfg_type == "full" else stream.frame_bff_size
        embeds = torch.cat([uncond_tokens.repeat(rows, 1, 1), embeds], dim=0)
        if pooled is not None:
            pooled = torch.cat([uncond.pooled.repeat(rows, 1), pooled], dim=0)
    stream.prompt_embeds = embeds
    if pooled is None:
        stream.added_cond = None
    else:
        time_ids = sdxl_time_ids(stream.height, stream.width, pooled.dtype, pooled.device)
        stream.added_cond = {"text_embeds": pooled, "time_ids": time_ids.repeat(pooled.shape[0], 1)}
