"""The SDXL family (issue 13) on the SDXL-shaped tiny model (`--engine tiny --model tiny-sdxl`), CPU fp32.

What must be shown: our composed step carries SDXL's conditioning (both text encoders' tokens, the
pooled embedding, time ids) on every UNet call and matches diffusers' `StableDiffusionXLImg2ImgPipeline`
for one step with the same modules and the same noise; the tiny SDXL adapter computes what diffusers'
own IP-Adapter SDXL path computes (1e-5 on the UNet output); an SDXL model folder loads through
from_pretrained; without weights `sdxl-turbo` falls back and says why.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline
from PIL import Image

from speakdraw.diffusion import DiffusionEngine, build_components, load_diffusion_engine
from speakdraw.diffusion.architectures import SDXL_TURBO_SCHEDULER
from speakdraw.diffusion.families import SDXL, detect_family
from speakdraw.diffusion.ip_adapter import tiny_adapter_state, tiny_image_encoder
from speakdraw.diffusion.pretrained import LOADS, check_family
from speakdraw.engines import EngineOptions, EngineUnavailable, load_engine
from speakdraw.settings import Settings
from tests.test_ip_adapter import ours_and_diffusers

SIZE = 64


@pytest.fixture(autouse=True)
def _one_torch_thread(torch_one_thread):
    """Tiny models: one thread is faster and leaves the other core to the rest of the suite."""


@pytest.fixture(scope="module")
def engine() -> DiffusionEngine:
    return load_diffusion_engine(EngineOptions(engine="tiny", model="tiny-sdxl", device="cpu"))


def camera(shift: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).astype(np.int16)
    rgb += np.random.default_rng(shift).integers(-30, 30, rgb.shape, dtype=np.int16)
    rgb[16 + shift : 32 + shift, 16:32] = 230
    return rgb.clip(0, 255).astype(np.uint8)


def picture(seed: int) -> np.ndarray:
    blocks = np.random.default_rng(seed).integers(0, 256, (10, 13, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((10, 10, 1), np.uint8))


def settings(**kw) -> Settings:
    return Settings(**{"width": SIZE, "height": SIZE, "prompt_fade_frames": 0, "seed": 7, **kw})


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ----------------------------------------------------------------------------- the family


def test_tiny_sdxl_is_the_sdxl_family_with_image_prompts(engine):
    assert engine.family == SDXL and engine.is_sdxl
    assert engine.features() == {"diffusion": True, "image_prompt": True}
    assert detect_family(build_components("full-size-sdxl", device="meta").unet.config) == SDXL  # no weights read
    out = engine.new_session(settings()).process(camera())
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8


def test_every_unet_call_carries_pooled_embeds_and_time_ids(engine):
    """added_cond_kwargs on every call, one row per UNet row (CFG rows too), time ids from the frame size."""
    calls: list[dict] = []

    def hook(module, args, kwargs):
        calls.append(kwargs)

    handle = engine.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        session = engine.new_session(settings(cfg_type="full", guidance_scale=2.0, steps=2, prompt="a cat"))
        session.process(camera())
        wide = engine.new_session(settings())  # the frame, not the settings, sets the size
        wide.process(np.zeros((48, 80, 3), np.uint8))
    finally:
        handle.remove()
    assert len(calls) == 2
    full, plain = calls
    added = full["added_cond_kwargs"]
    assert added["text_embeds"].shape == (4, 32) and added["time_ids"].shape == (4, 6)  # 2 steps x (uncond, cond)
    assert full["encoder_hidden_states"].shape == (4, 77, 64)  # both encoders' tokens side by side
    cond = engine.encode_prompt("a cat")
    assert torch.equal(added["text_embeds"][2], cond.pooled[0])
    assert torch.equal(added["text_embeds"][0], torch.zeros_like(cond.pooled[0]))  # empty negative: zeros
    assert plain["added_cond_kwargs"]["time_ids"].tolist() == [[48.0, 80.0, 0.0, 0.0, 48.0, 80.0]]


def test_prompt_fade_moves_tokens_and_pooled_together(engine):
    start = engine.new_session(settings(prompt="red")).process(camera())
    target = engine.new_session(settings(prompt="blue sky")).process(camera())
    session = engine.new_session(settings(prompt="red", prompt_fade_frames=3))
    session.process(camera())
    new = session.settings.updated({"prompt": "blue sky"})
    session.update(new, {"prompt"})
    fading = [session.process(camera()) for _ in range(3)]
    assert mad(fading[0], start) > 0 and mad(fading[0], target) > 0 and np.array_equal(fading[-1], target)
    assert session.stream.added_cond["text_embeds"].shape == (1, 32)


# ----------------------------------------------------------------------------- faithful to diffusers


@pytest.mark.parametrize("cfg", [{}, {"cfg_type": "full", "guidance_scale": 3.0}])
def test_matches_diffusers_sdxl_img2img_for_one_step(engine, cfg):
    """Same modules, same noise: diffusers' SDXL img2img with 2 trailing Euler steps at strength 0.5 runs one
    step at t=499, which is our t_index 25 (strength 0.49); its noise is randn((1, 4, h/8, w/8)) from the
    seed's generator, as our stream's init noise."""
    s = settings(prompt="a lighthouse", strength=0.49, **cfg)
    frames = [camera(0), camera(5)]
    session = engine.new_session(s)
    ours = [session.process(f) for f in frames]
    assert session.stream.sub_timesteps == [499]
    c = engine.components
    sd_pipe = StableDiffusionXLImg2ImgPipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        text_encoder_2=c.text_encoder_2,
        tokenizer=c.tokenizer,
        tokenizer_2=c.tokenizer_2,
        unet=c.unet,
        scheduler=EulerDiscreteScheduler.from_config(SDXL_TURBO_SCHEDULER),
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    sd_pipe.set_progress_bar_config(disable=True)
    for frame, out in zip(frames, ours, strict=True):
        ref = sd_pipe(
            prompt="a lighthouse",
            image=Image.fromarray(frame),
            strength=0.5,
            num_inference_steps=2,
            guidance_scale=cfg.get("guidance_scale", 0.0),
            generator=torch.Generator().manual_seed(s.seed),
            output_type="np",
        ).images[0]
        expected = (ref * 255).round().astype(np.uint8)
        diff = np.abs(out.astype(np.int16) - expected)
        assert diff.max() <= 2, (int(diff.max()), float(diff.mean()))
    assert mad(ours[0], frames[0]) > 2  # it did repaint the frame


def test_tiny_sdxl_adapter_matches_diffusers_ip_adapter_sdxl(engine):
    """Same state dict through diffusers' own `_load_ip_adapter_weights` + SDXL `added_cond_kwargs` path."""
    scale = 0.7
    ours, adapter, theirs = ours_and_diffusers(engine, scale)
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    text = torch.randn(2, 77, 64, generator=g)
    pooled = torch.randn(2, 32, generator=g)
    time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)
    image = torch.randn(2, 32, generator=g)
    t = torch.tensor([999, 499])
    with torch.no_grad():
        expected = theirs(
            sample,
            t,
            encoder_hidden_states=text,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids, "image_embeds": image},
        )[0]
        got = ours(
            sample,
            t,
            encoder_hidden_states=torch.cat([text, adapter.projection(image)], 1),
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
            cross_attention_kwargs={"ip_scale": torch.tensor(scale)},
        )[0]
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_image_prompt_changes_the_output_and_scale_zero_is_plain(engine):
    image = engine.encode_image_prompt(picture(1))
    plain = engine.new_session(settings()).process(camera())
    on = engine.new_session(settings(ip_adapter_scale=1.5))
    on.set_image_prompt(image)
    zero = engine.new_session(settings(ip_adapter_scale=0.0))
    zero.set_image_prompt(image)
    assert mad(on.process(camera()), plain) > 1.0
    assert np.abs(zero.process(camera()).astype(np.int16) - plain).max() <= 1
    on.set_image_prompt(None)
    assert np.abs(on.process(camera()).astype(np.int16) - plain).max() <= 1


# ----------------------------------------------------------------------------- loading


def test_sdxl_folder_loads_with_taesdxl_through_from_pretrained(engine, tmp_path):
    """`--engine sdxl-turbo --model <SDXL folder>`: the real from_pretrained path, same weights, same frames."""
    c = build_components("tiny-sdxl")
    c.pipeline().save_pretrained(tmp_path / "model")
    c.vae.save_pretrained(tmp_path / "taesdxl")
    assert check_family(tmp_path / "model") == SDXL
    loads = LOADS["sdxl-turbo"]
    options = EngineOptions(engine="sdxl-turbo", model=str(tmp_path / "model"), device="cpu")
    options.extra.update(taesd=str(tmp_path / "taesdxl"), ip_adapter="off")
    loaded = load_diffusion_engine(options)
    assert loaded.family == SDXL and loaded.name == "sdxl-turbo" and LOADS["sdxl-turbo"] == loads + 1
    s = settings(prompt="a red boat")
    assert np.array_equal(loaded.new_session(s).process(camera()), engine.new_session(s).process(camera()))


def test_sdxl_without_its_second_text_encoder_is_refused(tmp_path):
    import json

    from speakdraw.diffusion.architectures import SDXL_UNET

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps(SDXL_UNET))
    with pytest.raises(EngineUnavailable, match="text_encoder_2"):
        check_family(tmp_path)


def test_sdxl_turbo_offline_falls_back_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEAKDRAW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SPEAKDRAW_SDXL_TURBO_PATH", raising=False)
    start = time.perf_counter()
    with pytest.raises(EngineUnavailable, match="sdxl-turbo.*offline"):
        load_diffusion_engine(EngineOptions(engine="sdxl-turbo", device="cpu"))
    engine, warnings = load_engine(EngineOptions(engine="sdxl-turbo", device="cpu"))
    assert time.perf_counter() - start < 15
    assert not isinstance(engine, DiffusionEngine)
    assert "sdxl-turbo" in warnings[0] and "offline" in warnings[0] and engine.name in warnings[0]


def test_registry_lists_the_sdxl_weights():
    from speakdraw import weights

    for name in ("sdxl-turbo", "taesdxl", "ip-adapter-sdxl"):
        entry = weights.REGISTRY[name]
        assert entry.sources and any("hub" in source.describe() for source in entry.sources)


def test_sdxl_adapter_file_loads_through_the_registry(engine, tmp_path, monkeypatch):
    """`ip-adapter-sdxl` (safetensors, the hub file's format) + the ViT-H encoder entry, by env path."""
    from safetensors.torch import save_file

    encoder = tiny_image_encoder()
    state = tiny_adapter_state(engine.unet, encoder.config.projection_dim)
    encoder.save_pretrained(tmp_path / "image_encoder", safe_serialization=True)
    path = tmp_path / "ip-adapter_sdxl_vit-h.safetensors"
    save_file({f"{g}.{k}": v.contiguous() for g, d in state.items() for k, v in d.items()}, str(path))
    monkeypatch.setenv("SPEAKDRAW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPEAKDRAW_IP_ADAPTER_SDXL_PATH", str(path))
    monkeypatch.setenv("SPEAKDRAW_IP_ADAPTER_ENCODER_PATH", str(tmp_path / "image_encoder"))
    loaded = load_diffusion_engine(
        EngineOptions(engine="tiny", model="tiny-sdxl", device="cpu", extra={"ip_adapter": "registry"})
    )
    assert loaded.features()["image_prompt"] and str(path) in loaded.ip_adapter.source
    outs = []
    for e in (loaded, engine):
        session = e.new_session(settings())
        session.set_image_prompt(e.encode_image_prompt(picture(2)))
        outs.append(session.process(camera()))
    assert np.array_equal(*outs)
