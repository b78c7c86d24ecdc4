"""One diffusion step for one or many calls: StreamDiffusion's `predict_x0_batch`, split around the UNet.

StreamDiffusion runs encode → UNet → scheduler → decode on one stream object. To run N
calls in ONE UNet call, each session's part before the UNet (`unet_rows`: its latent
rows, timesteps, prompt embeddings, SDXL added conditioning, image-prompt scale) and
after it (`finish`: CFG, the LCM boundary step, the stream-batch buffers) are separate
functions over that session's own StreamDiffusion object, and `run_unet` concatenates
the rows of every session, calls the shared UNet once and hands each session its rows
back. A single call is a batch of one, so both paths run this same code, and
`tests/test_diffusion_engine.py` checks it against StreamDiffusion's own methods.

Image prompts in a mixed batch are **padded**: a session without one gets zero image
tokens and an image scale of 0 on its rows; the IP attention then adds exactly
`0 * attn(zeros) = 0`, so its rows compute plain attention over its text tokens, as
they would alone (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from streamdiffusion import StreamDiffusion


@dataclass
class Rows:
    """One session's share of a UNet call, and what `finish` needs afterwards."""

    x_t: torch.Tensor  # the session's latent batch (new frame + stream-batch buffer)
    x: torch.Tensor  # UNet input rows (x_t plus the CFG rows its cfg_type adds)
    t: torch.Tensor  # one timestep per row
    embeds: torch.Tensor  # (rows, tokens, D): text tokens, then image tokens when it has an image prompt
    image_tokens: int  # how many of `embeds`' tokens are image tokens (0: no image prompt)
    ip_scale: torch.Tensor | None  # this session's image scale (0-d), None without an image prompt
    added: dict[str, torch.Tensor] | None  # SDXL: text_embeds (rows, P), time_ids (rows, 6)

    @property
    def count(self) -> int:
        return int(self.x.shape[0])


def _cfg_rows(stream: StreamDiffusion) -> str | None:
    """'initialize' / 'full' when the stream's UNet call carries unconditional rows, else None."""
    if stream.guidance_scale > 1.0 and stream.cfg_type in ("initialize", "full"):
        return stream.cfg_type
    return None


def row_count(stream: StreamDiffusion) -> int:
    """How many UNet rows this stream adds to a call (its stream batch, plus the CFG rows of its cfg_type)."""
    cfg = _cfg_rows(stream)
    if cfg == "full":
        return 2 * stream.batch_size
    return stream.batch_size + (stream.frame_bff_size if cfg == "initialize" else 0)


def encode(stream: StreamDiffusion, latent: torch.Tensor) -> torch.Tensor:
    """A frame's VAE latent (already sampled) → the noised x_t, as `StreamDiffusion.encode_image`."""
    return stream.add_noise(latent * stream.vae.config.scaling_factor, stream.init_noise[0], 0)


def unet_rows(
    stream: StreamDiffusion,
    x_t_latent: torch.Tensor,
    *,
    image_tokens: int = 0,
    ip_scale: torch.Tensor | None = None,
) -> Rows:
    """The first half of `predict_x0_batch` + `unet_step`: build this session's UNet rows.

    Advances `stock_noise` exactly as StreamDiffusion does before its UNet call.
    """
    if not stream.use_denoising_batch:
        raise ValueError("only the denoising-batch stream layout is supported")
    if stream.denoising_steps_num > 1:
        x_t_latent = torch.cat((x_t_latent, stream.x_t_latent_buffer), dim=0)
        stream.stock_noise = torch.cat((stream.init_noise[0:1], stream.stock_noise[:-1]), dim=0)
    t_list = stream.sub_timesteps_tensor
    cfg = _cfg_rows(stream)
    if cfg == "initialize":
        x = torch.concat([x_t_latent[0:1], x_t_latent], dim=0)
        t_list = torch.concat([t_list[0:1], t_list], dim=0)
    elif cfg == "full":
        x = torch.concat([x_t_latent, x_t_latent], dim=0)
        t_list = torch.concat([t_list, t_list], dim=0)
    else:
        x = x_t_latent
    return Rows(
        x_t=x_t_latent,
        x=x,
        t=t_list,
        embeds=stream.prompt_embeds,
        image_tokens=image_tokens,
        ip_scale=ip_scale,
        added=getattr(stream, "added_cond", None),
    )


def run_unet(unet: torch.nn.Module, batch: list[Rows]) -> list[torch.Tensor]:
    """ONE UNet call over every session's rows; each session gets its own rows of the prediction back."""
    with_image = [r.image_tokens for r in batch if r.ip_scale is not None]
    kwargs: dict = {}
    embeds = [r.embeds for r in batch]
    if with_image:
        tokens = with_image[0]
        if any(n != tokens for n in with_image):
            raise ValueError("sessions in one batch have image prompts of different token counts")
        scales = []
        for i, r in enumerate(batch):
            scale = r.ip_scale
            if scale is None:  # pad: zero image tokens, scale 0 (see the module doc)
                pad = r.embeds.new_zeros((r.embeds.shape[0], tokens, r.embeds.shape[2]))
                embeds[i] = torch.cat([r.embeds, pad], dim=1)
                scale = r.embeds.new_zeros(())
            scales.append(scale.to(r.embeds.dtype).reshape(1).expand(r.count))
        kwargs["cross_attention_kwargs"] = {"ip_scale": torch.cat(scales).view(-1, 1, 1, 1)}
    if batch[0].added is not None:
        if any(r.added is None for r in batch):
            raise ValueError("SDXL and non-SDXL rows cannot share a UNet call")
        kwargs["added_cond_kwargs"] = {k: torch.cat([r.added[k] for r in batch]) for k in batch[0].added}
    if len(batch) == 1:
        x, t, hidden = batch[0].x, batch[0].t, embeds[0]
    else:
        x = torch.cat([r.x for r in batch])
        t = torch.cat([r.t for r in batch])
        hidden = torch.cat(embeds)
    pred = unet(x, t, encoder_hidden_states=hidden, return_dict=False, **kwargs)[0]
    return list(pred.split([r.count for r in batch]))


def finish(stream: StreamDiffusion, rows: Rows, model_pred: torch.Tensor) -> torch.Tensor:
    """The second half of `unet_step` + `predict_x0_batch`: CFG, the LCM step, the buffers; returns x0 (1 row)."""
    x_t_latent = rows.x_t
    cfg = _cfg_rows(stream)
    noise_pred_uncond = None
    if cfg == "initialize":
        noise_pred_text = model_pred[1:]
        stream.stock_noise = torch.concat([model_pred[0:1], stream.stock_noise[1:]], dim=0)
    elif cfg == "full":
        noise_pred_uncond, noise_pred_text = model_pred.chunk(2)
    else:
        noise_pred_text = model_pred
    guided = stream.guidance_scale > 1.0
    if guided and stream.cfg_type in ("self", "initialize"):
        noise_pred_uncond = stream.stock_noise * stream.delta
    if guided and stream.cfg_type != "none":
        model_pred = noise_pred_uncond + stream.guidance_scale * (noise_pred_text - noise_pred_uncond)
    else:
        model_pred = noise_pred_text
    denoised = stream.scheduler_step_batch(model_pred, x_t_latent, None)
    if stream.cfg_type in ("self", "initialize"):
        scaled_noise = stream.beta_prod_t_sqrt * stream.stock_noise
        delta_x = stream.scheduler_step_batch(model_pred, scaled_noise, None)
        ones = torch.ones_like(stream.alpha_prod_t_sqrt[0:1])
        alpha_next = torch.concat([stream.alpha_prod_t_sqrt[1:], ones], dim=0)
        delta_x = alpha_next * delta_x
        beta_next = torch.concat([stream.beta_prod_t_sqrt[1:], torch.ones_like(stream.beta_prod_t_sqrt[0:1])], dim=0)
        delta_x = delta_x / beta_next
        init_noise = torch.concat([stream.init_noise[1:], stream.init_noise[0:1]], dim=0)
        stream.stock_noise = init_noise + delta_x
    if stream.denoising_steps_num > 1:
        out = denoised[-1].unsqueeze(0)
        if stream.do_add_noise:
            stream.x_t_latent_buffer = (
                stream.alpha_prod_t_sqrt[1:] * denoised[:-1] + stream.beta_prod_t_sqrt[1:] * stream.init_noise[1:]
            )
        else:
            stream.x_t_latent_buffer = stream.alpha_prod_t_sqrt[1:] * denoised[:-1]
        return out
    stream.x_t_latent_buffer = None
    return denoised


def sample_latents(vae: torch.nn.Module, x: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One VAE encode of every session's frame; a KL VAE samples each row with its session's generator."""
    encoded = vae.encode(x)
    if hasattr(encoded, "latent_dist"):
        # diffusers' randn_tensor draws row i from generators[i] (shape (1, ...)), as one session alone would
        return encoded.latent_dist.sample(generators if len(generators) > 1 else generators[0])
    return encoded.latents
