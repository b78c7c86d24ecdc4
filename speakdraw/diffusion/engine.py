"""The diffusion engine: shared modules, one StreamDiffusion stream per session.

`DiffusionEngine` owns the loaded modules (UNet, VAE or TAESD, text encoder,
tokenizer) and a prompt-embedding cache; they are only read after load.
`DiffusionSession` owns one `streamdiffusion.StreamDiffusion` object built over the
engine's pipeline: its scheduler, noise, latent buffers and prompt embeddings are
per object, so two calls never share state. StreamDiffusion's `__call__` times itself
with CUDA events (it fails on CPU), its similarity filter sleeps, and its UNet call has
no SDXL conditioning, so a frame is composed here from its parts (`step.py`): one VAE
encode, one UNet call, one decode — for one session (`process`) or for the newest frame
of many sessions at once (`DiffusionEngine.process_batch`, the device runner's
seam), each session with its own embeddings, noise, timesteps, guidance and buffers.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import LCMScheduler
from streamdiffusion import StreamDiffusion

from speakdraw.diffusion import step
from speakdraw.diffusion.architectures import Components
from speakdraw.diffusion.ip_adapter import ImagePrompt, IPAdapter
from speakdraw.diffusion.similarity import FrameSimilarity
from speakdraw.diffusion.stream_state import (
    TextEmbeds,
    layout_embeds,
    set_guidance,
    set_noise,
    set_schedule,
    t_index_list,
)
from speakdraw.engines.base import Engine, EngineSession, ImagePromptUnavailable
from speakdraw.settings import Settings

EMBED_CACHE_SIZE = 64


class DiffusionEngine(Engine):
    """Loaded once per device; `new_session` is cheap (no model work but text encoding)."""

    def __init__(
        self,
        components: Components,
        *,
        name: str,
        model_id: str,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> None:
        self.name = name
        self.model_id = model_id
        self.warmup_hook: Callable[[], None] | None = None  # set by an acceleration that compiles
        self.torch_device = torch.device(device)
        self.device = str(self.torch_device)
        self.dtype = dtype
        self.components = components.to(self.torch_device, dtype)
        # NHWC convolutions: faster in oneDNN (CPU) and on tensor cores; StreamDiffusion's own
        # latents are NCHW, and a UNet fed those ran ~1.6x slower per conv on CPU than one fed NHWC.
        for module in (components.unet, components.vae):
            module.to(memory_format=torch.channels_last)
        self.sd_pipe = components.pipeline()
        self.sd_pipe.set_progress_bar_config(disable=True)
        # StreamDiffusion builds an LCMScheduler from this config for every stream; handing it an
        # LCM config (same betas) keeps diffusers from warning about Euler-only keys on each call.
        lcm_keys = inspect.signature(LCMScheduler.__init__).parameters
        lcm_config = {k: v for k, v in components.scheduler.config.items() if k in lcm_keys}
        self.sd_pipe.scheduler = LCMScheduler.from_config(lcm_config)
        # What sessions run; acceleration may swap these for compiled / TensorRT modules.
        self.unet = components.unet
        self.vae = components.vae
        self.acceleration = "none"
        self.fixed_size: tuple[int, int] | None = None  # TensorRT engines are built for one size
        self.max_unet_rows: int | None = None  # TensorRT engines take at most this many rows per call
        self.text_encodes = 0  # text-encoder runs (tests: a prompt change encodes once, nothing else does)
        self.family = "sd2"  # set by the loader (ip_adapter.detect_family)
        self.ip_adapter: IPAdapter | None = None  # set by ip_adapter attachment at load
        self.ip_reason: str | None = "no IP-Adapter is loaded"  # why image prompts are off (None when on)
        self.batches = 0  # UNet calls made by process_batch (tests: N sessions, one call)
        self._embeds: OrderedDict[tuple[str, bool], TextEmbeds] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def vae_scale_factor(self) -> int:
        return int(self.sd_pipe.vae_scale_factor)

    def features(self) -> dict[str, bool]:
        return {"diffusion": True, "image_prompt": self.ip_adapter is not None}

    def image_prompt_status(self) -> str | None:
        return None if self.ip_adapter is not None else self.ip_reason

    def encode_image_prompt(self, rgb: np.ndarray) -> ImagePrompt:
        """One CLIP vision encoding + projection; the tokens are then joined to a session's text tokens."""
        if self.ip_adapter is None:
            raise ImagePromptUnavailable(self.ip_reason or "no IP-Adapter is loaded")
        return self.ip_adapter.encode(rgb)

    def new_session(self, settings: Settings) -> DiffusionSession:
        return DiffusionSession(self, settings)

    @property
    def is_sdxl(self) -> bool:
        return self.components.text_encoder_2 is not None

    @torch.no_grad()
    def encode_prompt(self, text: str, negative: bool = False) -> TextEmbeds:
        """`text`'s embeddings (SDXL: both encoders' tokens + the pooled one), cached: a recent prompt is free.

        SDXL with `force_zeros_for_empty_prompt` (SDXL-Turbo, the base model): an empty
        negative prompt is all zeros, as diffusers does when no negative prompt is given.
        """
        key = (text, negative and self.is_sdxl)
        with self._lock:
            hit = self._embeds.get(key)
            if hit is not None:
                self._embeds.move_to_end(key)
                return hit
        if not self.is_sdxl:
            embeds = TextEmbeds(self.sd_pipe.encode_prompt(text, self.torch_device, 1, False)[0])
        else:
            encoded = self.sd_pipe.encode_prompt(text, device=self.torch_device, do_classifier_free_guidance=False)
            tokens, pooled = encoded[0], encoded[2]
            if negative and text == "" and self.sd_pipe.config.force_zeros_for_empty_prompt:
                tokens, pooled = torch.zeros_like(tokens), torch.zeros_like(pooled)
            embeds = TextEmbeds(tokens.to(self.dtype), pooled.to(self.dtype))
        with self._lock:
            self.text_encodes += 1
            self._embeds[key] = embeds
            while len(self._embeds) > EMBED_CACHE_SIZE:
                self._embeds.popitem(last=False)
        return embeds

    def encode_text(self, text: str) -> torch.Tensor:
        """(1, 77, D) token embeddings of `text` (cached; see `encode_prompt`)."""
        return self.encode_prompt(text).tokens

    # ----------------------------------------------------------------- batched step

    @torch.no_grad()
    def warmup(self) -> None:
        """Compile now (on the calling thread, which should be the one every frame runs on), once."""
        hook, self.warmup_hook = self.warmup_hook, None
        if hook is not None:
            hook()

    @torch.no_grad()  # as `warmup` runs: torch.compile guards on grad mode, a mismatch recompiles on the first frame
    def process_batch(self, items: Sequence[tuple[EngineSession, np.ndarray]]) -> list[np.ndarray]:
        """The newest frame of several sessions in one step: one VAE encode, ONE UNet call, one decode.

        Each session brings its own text (and image) tokens, noise, timesteps, guidance and
        stream-batch buffers (`step.py`), and its state moves on exactly as `process` would move it.
        Sessions whose frames map to different model sizes go in separate sub-batches; steps,
        cfg_type and image prompts may differ freely within one (rows are concatenated, image
        tokens padded). A session skipped by its similarity filter returns its last output
        without joining the step. Raises (no output for anyone) if the step itself fails.
        """
        outs: list[np.ndarray | None] = [None] * len(items)
        seen: set[int] = set()
        groups: dict[tuple[int, int], list[tuple[int, DiffusionSession, torch.Tensor]]] = {}
        for i, (session, rgb) in enumerate(items):
            if not isinstance(session, DiffusionSession) or session.engine is not self:
                raise ValueError("process_batch takes sessions of this engine only")
            if id(session) in seen:
                raise ValueError("one frame per session per step")
            seen.add(id(session))
            ready = session._begin(rgb)
            if isinstance(ready, np.ndarray):
                outs[i] = ready
            else:
                groups.setdefault((session.stream.width, session.stream.height), []).append((i, session, ready))
        for group in groups.values():
            for chunk in self._chunks(group):
                for (i, session, _), out in zip(chunk, self._step(chunk), strict=True):
                    outs[i] = session._end(out, items[i][1].shape)
        return outs  # type: ignore[return-value]

    def _chunks(self, group: list[tuple[int, DiffusionSession, torch.Tensor]]) -> list[list]:
        """The group as is, or cut so that no UNet call exceeds `max_unet_rows` (TensorRT's profile)."""
        if self.max_unet_rows is None:
            return [group]
        chunks: list[list] = [[]]
        rows = 0
        for entry in group:
            n = step.row_count(entry[1].stream)
            if chunks[-1] and rows + n > self.max_unet_rows:
                chunks.append([])
                rows = 0
            chunks[-1].append(entry)
            rows += n
        return chunks

    def _step(self, group: list[tuple[int, DiffusionSession, torch.Tensor]]) -> list[torch.Tensor]:
        """Sessions whose frames share one model size: their decoded images (1x3xHxW each)."""
        x = group[0][2] if len(group) == 1 else torch.cat([g[2] for g in group])
        latents = step.sample_latents(self.vae, x, [s.stream.generator for _, s, _ in group])
        rows = [
            s._rows(step.encode(s.stream, latents[k : k + 1] if len(group) > 1 else latents))
            for k, (_, s, _) in enumerate(group)
        ]
        preds = step.run_unet(self.unet, rows)
        self.batches += 1
        x0 = [step.finish(s.stream, r, p) for (_, s, _), r, p in zip(group, rows, preds, strict=True)]
        x0_all = x0[0] if len(x0) == 1 else torch.cat(x0)
        images = self.vae.decode(x0_all / self.vae.config.scaling_factor, return_dict=False)[0]
        return list(images.split(1)) if len(group) > 1 else [images]

    @torch.no_grad()
    def vae_roundtrip(self, rgb: np.ndarray) -> np.ndarray:
        """decode(encode(frame)) with no noise: what strength 0 would give; the VAE's own loss."""
        x = to_tensor(rgb, self.torch_device, self.dtype)
        encoded = self.vae.encode(x)
        latent = encoded.latent_dist.mode() if hasattr(encoded, "latent_dist") else encoded.latents
        return to_uint8(self.vae.decode(latent, return_dict=False)[0])

    def close(self) -> None:
        self._embeds.clear()
        if self.torch_device.type == "cuda":
            torch.cuda.empty_cache()


def to_tensor(rgb: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """HxWx3 uint8 → 1x3xHxW in [-1, 1] on `device`. A decoded frame's pixels can be a read-only view, which torch
    shares only with a warning (and undefined behaviour on a write): such an array is copied first (np.require)."""
    x = torch.from_numpy(np.require(rgb, dtype=np.uint8, requirements=["C_CONTIGUOUS", "WRITEABLE"])).to(device)
    return x.permute(2, 0, 1).unsqueeze(0).to(dtype).div_(127.5).sub_(1.0)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """1x3xHxW in [-1, 1] → HxWx3 uint8 on the CPU."""
    x = (image[0].float().clamp(-1.0, 1.0) + 1.0) * 127.5
    return x.round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class DiffusionSession(EngineSession):
    """One call's stream: settings changes re-prepare only their own part (see stream_state)."""

    def __init__(self, engine: DiffusionEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.stream: StreamDiffusion | None = None  # built at the first frame's size
        self.frames = 0
        self.frames_skipped = 0
        self.streams_built = 0
        self._generator = torch.Generator()  # CPU: same noise on every device, like prepare()
        self._uncond = engine.encode_prompt(settings.negative_prompt, negative=True)
        self._cond = engine.encode_prompt(settings.prompt)  # what the current frame uses
        self._fade: tuple[TextEmbeds, TextEmbeds, int, int] | None = None  # from, to, done, total
        self._filter = self._make_filter(settings)
        self._last_out: np.ndarray | None = None
        self._image: ImagePrompt | None = None  # this session's IP-Adapter tokens
        self._ip_scale: torch.Tensor | None = None  # goes with this session's rows of every UNet call

    # ----------------------------------------------------------------- image prompt

    def set_image_prompt(self, prompt: ImagePrompt | None) -> None:
        if prompt is not None and self.engine.ip_adapter is None:
            raise ImagePromptUnavailable(self.engine.ip_reason or "no IP-Adapter is loaded")
        self._image = prompt
        self._set_ip_scale()
        if self.stream is not None:
            self._layout()

    @property
    def has_image_prompt(self) -> bool:
        return self._image is not None

    def _set_ip_scale(self) -> None:
        if self._image is None:
            self._ip_scale = None
        else:
            self._ip_scale = torch.tensor(
                self.settings.ip_adapter_scale, dtype=self.engine.dtype, device=self.engine.torch_device
            )

    def _layout(self) -> None:
        image = None if self._image is None else (self._image.cond, self._image.uncond)
        layout_embeds(self.stream, self._cond, self._uncond, image)

    # ----------------------------------------------------------------- settings

    @staticmethod
    def _make_filter(settings: Settings) -> FrameSimilarity | None:
        return FrameSimilarity(settings.similarity_threshold) if settings.similarity_filter else None

    def update(self, settings: Settings, changed: set[str]) -> None:
        self.settings = settings
        if "negative_prompt" in changed:
            self._uncond = self.engine.encode_prompt(settings.negative_prompt, negative=True)
        if "prompt" in changed:
            self._start_fade(self.engine.encode_prompt(settings.prompt), settings.prompt_fade_frames)
        if changed & {"similarity_filter", "similarity_threshold"}:
            self._filter = self._make_filter(settings)
        if "ip_adapter_scale" in changed:
            self._set_ip_scale()
        stream = self.stream
        if stream is None:
            return
        if changed & {"steps", "cfg_type"}:  # the stream batch layout changes: a new stream object
            self._build_stream(stream.width, stream.height)
            return
        if "strength" in changed:
            set_schedule(stream, t_index_list(settings.strength, settings.steps))
        if "seed" in changed:
            set_noise(stream, settings.seed, self._generator)
        if changed & {"guidance_scale", "delta"}:
            set_guidance(stream, settings.guidance_scale, settings.delta)
        if changed & {"guidance_scale", "prompt", "negative_prompt"}:
            self._layout()

    def _start_fade(self, target: TextEmbeds, frames: int) -> None:
        if frames <= 0 or self.frames == 0:
            self._cond, self._fade = target, None
        else:
            self._fade = (self._cond, target, 0, frames)  # from wherever the last frame was

    def _advance_fade(self) -> None:
        if self._fade is None:
            return
        start, target, done, total = self._fade
        done += 1
        self._cond = start.lerp(target, done / total) if done < total else target
        self._fade = None if done >= total else (start, target, done, total)
        if self.stream is not None:
            self._layout()

    @property
    def fading(self) -> bool:
        return self._fade is not None

    def _build_stream(self, width: int, height: int) -> None:
        s, engine = self.settings, self.engine
        stream = StreamDiffusion(
            engine.sd_pipe,
            t_index_list=t_index_list(s.strength, s.steps),
            torch_dtype=engine.dtype,
            width=width,
            height=height,
            cfg_type=s.cfg_type,
        )
        stream.device = engine.torch_device
        # The engine calls the UNet (step.run_unet); acceleration may have swapped it since load.
        stream.unet = engine.unet
        stream.vae = engine.vae
        set_schedule(stream, stream.t_list)
        set_noise(stream, s.seed, self._generator)
        set_guidance(stream, s.guidance_scale, s.delta)
        self.stream = stream
        self._layout()
        self.streams_built += 1

    # ----------------------------------------------------------------- frames

    def _model_size(self, width: int, height: int) -> tuple[int, int]:
        if self.engine.fixed_size is not None:
            return self.engine.fixed_size
        f = self.engine.vae_scale_factor
        return max(f, round(width / f) * f), max(f, round(height / f) * f)

    def process(self, rgb: np.ndarray) -> np.ndarray:
        """One frame alone: a batch of one through the engine's step (the same code as batched calls)."""
        return self.engine.process_batch([(self, rgb)])[0]

    def _begin(self, rgb: np.ndarray) -> np.ndarray | torch.Tensor:
        """Before the step: the similarity filter's answer (last output), or the frame as a model-size tensor."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 frame, got {rgb.dtype} {rgb.shape}")
        if self._filter is not None and self._filter.should_skip(rgb):
            if self._last_out is not None and self._last_out.shape == rgb.shape:
                self.frames_skipped += 1
                return self._last_out
        height, width = rgb.shape[:2]
        model_w, model_h = self._model_size(width, height)
        if self.stream is None or (self.stream.width, self.stream.height) != (model_w, model_h):
            self._build_stream(model_w, model_h)
        self._advance_fade()
        x = to_tensor(rgb, self.engine.torch_device, self.engine.dtype)
        if (model_w, model_h) != (width, height):
            x = F.interpolate(x, size=(model_h, model_w), mode="bilinear", align_corners=False)
        return x

    def _rows(self, x_t: torch.Tensor) -> step.Rows:
        tokens = 0 if self._image is None else int(self._image.cond.shape[1])
        return step.unet_rows(self.stream, x_t, image_tokens=tokens, ip_scale=self._ip_scale)

    def _end(self, image: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
        """After the step: back to the frame's size, uint8; remembered for the similarity filter."""
        height, width = shape[:2]
        if (self.stream.width, self.stream.height) != (width, height):
            image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
        out = to_uint8(image)
        self._last_out = out
        self.frames += 1
        return out

    def close(self) -> None:
        self.stream = None
        self._last_out = None
