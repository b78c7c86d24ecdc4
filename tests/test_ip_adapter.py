"""IP-Adapter image prompts on the SD 1.5-shaped tiny model (CPU), with a tiny random CLIP vision
encoder + adapter built in-process in the real `ip-adapter_sd15.bin` format.

What must be shown (issue 7, part 1): with a fixed seed an image prompt changes the output; scale 0
gives the same output as no image prompt; clearing restores it. Plus: the image is encoded once per
change (never per frame, never for a scale change), sessions sharing the UNet do not leak image or
scale into each other, our processors compute what diffusers' own IP-Adapter path computes, the file
format loads through the weight registry, and families without an adapter say why.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

from speakdraw.diffusion import DiffusionEngine, build_components, load_diffusion_engine
from speakdraw.diffusion.families import SD2, SD15, SDXL, detect_family
from speakdraw.diffusion.ip_adapter import (
    AdapterMismatch,
    IPAdapter,
    read_adapter_file,
    tiny_adapter_state,
    tiny_image_encoder,
)
from speakdraw.diffusion.pretrained import check_family, fuse_lcm_lora
from speakdraw.engines import EngineOptions, EngineUnavailable, ImagePromptUnavailable, PassthroughEngine
from speakdraw.pipeline import Pipeline
from speakdraw.settings import Settings

SIZE = 64


@pytest.fixture(autouse=True)
def _one_torch_thread(torch_one_thread):
    """Tiny models: one thread is faster and leaves the other core to the rest of the suite."""


@pytest.fixture(scope="module")
def engine() -> DiffusionEngine:
    return load_diffusion_engine(EngineOptions(engine="tiny", model="tiny-sd15", device="cpu"))


def camera(shift: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1)
    rgb[16 + shift : 32 + shift, 16:32] = 230
    return rgb.astype(np.uint8)


def picture(seed: int, h: int = 90, w: int = 120) -> np.ndarray:
    """An image prompt: blocks of random colour (not the camera's size, like an upload)."""
    blocks = np.random.default_rng(seed).integers(0, 256, (h // 10 + 1, w // 10 + 1, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((10, 10, 1), np.uint8))[:h, :w]


def settings(**kw) -> Settings:
    return Settings(width=SIZE, height=SIZE, **{"prompt_fade_frames": 0, "seed": 7, **kw})


def frames(session, n: int = 3) -> list[np.ndarray]:
    return [session.process(camera(i)) for i in range(n)]


def same(xs: list[np.ndarray], ys: list[np.ndarray]) -> bool:
    return len(xs) == len(ys) and all(np.array_equal(a, b) for a, b in zip(xs, ys, strict=True))


def sd15(**extra) -> DiffusionEngine:
    return load_diffusion_engine(EngineOptions(engine="tiny", model="tiny-sd15", device="cpu", extra=extra))


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def with_image(engine: DiffusionEngine, s: Settings, image: np.ndarray | None) -> list[np.ndarray]:
    session = engine.new_session(s)
    if image is not None:
        session.set_image_prompt(engine.encode_image_prompt(image))
    return frames(session)


# ----------------------------------------------------------------------------- what must be shown (1)


def test_tiny_sd15_engine_has_image_prompts(engine):
    assert engine.family == SD15
    assert engine.features() == {"diffusion": True, "image_prompt": True}
    assert engine.image_prompt_status() is None


def test_an_image_prompt_changes_the_output_deterministically(engine):
    s = settings()
    plain = with_image(engine, s, None)
    red = with_image(engine, s, picture(1))
    assert all(mad(a, b) > 1.0 for a, b in zip(plain, red, strict=True)), [
        mad(a, b) for a, b in zip(plain, red, strict=True)
    ]
    assert same(red, with_image(engine, s, picture(1)))  # same seed: same frames
    other = with_image(engine, s, picture(2))  # the image's content matters, not just "an image"
    assert all(mad(a, b) > 0.3 for a, b in zip(red, other, strict=True))


def test_scale_zero_gives_exactly_the_output_of_no_image_prompt(engine):
    s = settings(ip_adapter_scale=0.0)
    assert same(with_image(engine, s, None), with_image(engine, s, picture(1)))


def test_clearing_restores_the_output_of_no_image_prompt(engine):
    s = settings()
    reference = engine.new_session(s)
    session = engine.new_session(s)
    session.set_image_prompt(engine.encode_image_prompt(picture(1)))
    for i in range(3):
        assert not np.array_equal(session.process(camera(i)), reference.process(camera(i)))
    session.set_image_prompt(None)
    for i in range(3, 6):
        assert np.array_equal(session.process(camera(i)), reference.process(camera(i)))


def test_strength_of_the_effect_follows_the_scale(engine):
    plain = with_image(engine, settings(), None)[-1]
    effect = [mad(with_image(engine, settings(ip_adapter_scale=v), picture(1))[-1], plain) for v in (0.3, 1.0, 2.0)]
    assert effect[0] < effect[1] < effect[2], effect


def test_scale_changes_live_without_reencoding_the_image(engine):
    s = settings(ip_adapter_scale=0.5)
    session = engine.new_session(s)
    session.set_image_prompt(engine.encode_image_prompt(picture(1)))
    session.process(camera())
    encodes, text_encodes = engine.ip_adapter.encodes, engine.text_encodes
    streams = session.streams_built
    new = s.updated({"ip_adapter_scale": 1.5})
    session.update(new, new.changed_fields(s))
    live = session.process(camera(1))
    assert engine.ip_adapter.encodes == encodes and engine.text_encodes == text_encodes
    assert session.streams_built == streams  # nothing re-prepared: the scale goes with the UNet call
    fresh = engine.new_session(new)
    fresh.set_image_prompt(engine.encode_image_prompt(picture(1)))
    fresh.process(camera())
    assert np.array_equal(live, fresh.process(camera(1)))


def test_frames_never_reencode_the_image(engine):
    session = engine.new_session(settings())
    session.set_image_prompt(engine.encode_image_prompt(picture(3)))
    before = engine.ip_adapter.encodes
    frames(session, 4)
    assert engine.ip_adapter.encodes == before


def test_sessions_sharing_the_unet_keep_their_own_image_and_scale(engine):
    """Interleaved frames of three sessions equal each one run alone."""
    configs = [
        (settings(), None),
        (settings(ip_adapter_scale=1.0), picture(1)),
        (settings(ip_adapter_scale=0.4), picture(2)),
    ]
    alone = [with_image(engine, s, img) for s, img in configs]
    sessions = []
    for s, img in configs:
        session = engine.new_session(s)
        if img is not None:
            session.set_image_prompt(engine.encode_image_prompt(img))
        sessions.append(session)
    together: list[list[np.ndarray]] = [[], [], []]
    for i in range(3):
        for k, session in enumerate(sessions):
            together[k].append(session.process(camera(i)))
    for k in range(3):
        assert same(alone[k], together[k]), k


def test_image_prompt_with_cfg_and_prompt_fade(engine):
    """CFG rows get the projection of zero embeds (like diffusers); a prompt fade keeps the image tokens."""
    s = settings(cfg_type="full", guidance_scale=2.0, steps=2, prompt_fade_frames=3)
    session = engine.new_session(s)
    session.set_image_prompt(engine.encode_image_prompt(picture(1)))
    session.process(camera())
    stream = session.stream
    assert stream.prompt_embeds.shape[1] == 77 + 4
    uncond_rows = stream.prompt_embeds[: stream.batch_size, 77:]
    assert torch.equal(uncond_rows[0], engine.ip_adapter._uncond[0])
    new = s.updated({"prompt": "a different thing"})
    session.update(new, new.changed_fields(s))
    session.process(camera(1))
    assert session.fading and session.stream.prompt_embeds.shape[1] == 77 + 4


def test_an_adapter_without_an_image_prompt_is_the_plain_model():
    """Loading the adapter changes nothing for sessions that do not use it (same seed-built weights)."""
    on = load_diffusion_engine(EngineOptions(engine="tiny", model="tiny-sd15", device="cpu"))
    off = load_diffusion_engine(
        EngineOptions(engine="tiny", model="tiny-sd15", device="cpu", extra={"ip_adapter": "off"})
    )
    assert off.ip_adapter is None and "turned off" in off.image_prompt_status()
    s = settings(cfg_type="self", guidance_scale=1.5, steps=2)
    assert same(with_image(on, s, None), with_image(off, s, None))


# ----------------------------------------------------------------------------- faithful to diffusers


def ours_and_diffusers(engine, scale: float) -> tuple:
    """Two copies of the engine's UNet with the same tiny adapter: ours (`IPAdapter`, scale per call) and
    diffusers' own `_load_ip_adapter_weights` path (scale set on its processors)."""
    encoder = tiny_image_encoder()
    state = tiny_adapter_state(engine.unet, encoder.config.projection_dim, seed=3)
    ours = copy.deepcopy(engine.components.unet)
    adapter = IPAdapter(ours, state, encoder, source="test")
    theirs = copy.deepcopy(engine.components.unet)
    theirs._load_ip_adapter_weights(state)
    for proc in theirs.attn_processors.values():
        if isinstance(proc, IPAdapterAttnProcessor2_0):
            proc.scale = scale
    return ours, adapter, theirs


def test_processors_compute_what_diffusers_ip_adapter_computes(engine):
    """Same state dict through diffusers' own `_load_ip_adapter_weights` + `added_cond_kwargs` path."""
    scale = 0.7
    ours, adapter, theirs = ours_and_diffusers(engine, scale)
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    text = torch.randn(2, 77, 32, generator=g)
    embeds = torch.randn(2, 32, generator=g)
    t = torch.tensor([999, 500])
    with torch.no_grad():
        expected = theirs(sample, t, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": embeds})[0]
        tokens = adapter.projection(embeds)
        got = ours(
            sample,
            t,
            encoder_hidden_states=torch.cat([text, tokens], 1),
            cross_attention_kwargs={"ip_scale": torch.tensor(scale)},
        )[0]
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_image_encoding_uses_clip_preprocessing(engine):
    """Same picture at another size / aspect gives nearly the same tokens (resize + centre crop)."""
    small = picture(4, 90, 120)
    a = engine.ip_adapter.encode(small).cond
    b = engine.ip_adapter.encode(np.kron(small, np.ones((3, 3, 1), np.uint8))).cond
    c = engine.ip_adapter.encode(picture(5, 90, 120)).cond
    assert (a - b).abs().mean() < 0.2 * (a - c).abs().mean()
    with pytest.raises(ValueError):
        engine.ip_adapter.encode(np.zeros((10, 10), np.uint8))


# ----------------------------------------------------------------------------- weights and families


def _save_tiny_adapter(engine: DiffusionEngine, folder, fmt: str = "bin"):
    encoder = tiny_image_encoder()
    state = tiny_adapter_state(engine.unet, encoder.config.projection_dim)
    encoder.save_pretrained(folder / "image_encoder", safe_serialization=True)
    if fmt == "bin":
        path = folder / "ip-adapter_sd15.bin"
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        path = folder / "ip-adapter_sd15.safetensors"
        save_file({f"{g}.{k}": v.contiguous() for g, d in state.items() for k, v in d.items()}, str(path))
    return path, folder / "image_encoder"


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_adapter_files_load_through_the_registry(engine, tmp_path, monkeypatch, fmt):
    """The real loading code (registry env paths → file → IPAdapter) on the tiny adapter saved to disk."""
    path, encoder = _save_tiny_adapter(engine, tmp_path, fmt)
    assert sorted(read_adapter_file(path)) == ["image_proj", "ip_adapter"]
    monkeypatch.setenv("SPEAKDRAW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPEAKDRAW_IP_ADAPTER_PATH", str(path))
    monkeypatch.setenv("SPEAKDRAW_IP_ADAPTER_ENCODER_PATH", str(encoder))
    loaded = load_diffusion_engine(
        EngineOptions(engine="tiny", model="tiny-sd15", device="cpu", extra={"ip_adapter": "registry"})
    )
    assert loaded.features()["image_prompt"] and str(path) in loaded.ip_adapter.source
    s = settings()
    assert same(with_image(loaded, s, picture(1)), with_image(engine, s, picture(1)))


def test_missing_adapter_weights_leave_the_engine_working_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEAKDRAW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("SPEAKDRAW_OFFLINE", "1")
    monkeypatch.delenv("SPEAKDRAW_IP_ADAPTER_PATH", raising=False)
    monkeypatch.delenv("SPEAKDRAW_IP_ADAPTER_ENCODER_PATH", raising=False)
    loaded = load_diffusion_engine(
        EngineOptions(engine="tiny", model="tiny-sd15", device="cpu", extra={"ip_adapter": "registry"})
    )
    reason = loaded.image_prompt_status()
    assert not loaded.features()["image_prompt"] and "ip-adapter-sd15" in reason and "models pull" in reason
    with pytest.raises(ImagePromptUnavailable, match="ip-adapter-sd15"):
        Pipeline(settings(), engine=loaded).set_image_prompt(picture(1))
    assert loaded.new_session(settings()).process(camera()).shape == (SIZE, SIZE, 3)


def test_an_adapter_for_another_width_is_refused_with_the_reason(engine):
    sd2 = build_components("tiny").unet  # same width in the tiny models: change the adapter instead
    encoder = tiny_image_encoder()
    state = tiny_adapter_state(sd2, encoder.config.projection_dim)
    state["image_proj"]["proj.weight"] = torch.zeros(4 * 48, 32)
    with pytest.raises(AdapterMismatch, match="another model family"):
        IPAdapter(copy.deepcopy(engine.components.unet), state, encoder, source="x")
    state = tiny_adapter_state(sd2, encoder.config.projection_dim)
    del state["ip_adapter"]["1.to_k_ip.weight"]
    with pytest.raises(AdapterMismatch, match="do not fit"):
        IPAdapter(copy.deepcopy(engine.components.unet), state, encoder, source="x")


# Published configs (unet/config.json): the keys the detection reads.
SD15_UNET = {"cross_attention_dim": 768, "use_linear_projection": False, "addition_embed_type": None}
SD21_UNET = {"cross_attention_dim": 1024, "use_linear_projection": True}
SDXL_UNET = {"cross_attention_dim": 2048, "use_linear_projection": True, "addition_embed_type": "text_time"}


def test_family_detection_from_model_configs():
    assert detect_family(SD15_UNET) == SD15
    assert detect_family(SD21_UNET) == SD2
    assert detect_family(SDXL_UNET) == SDXL
    assert detect_family(build_components("tiny").unet.config) == SD2
    assert detect_family(build_components("tiny-sd15").unet.config) == SD15


def test_sd_turbo_family_has_no_image_prompts_and_says_why():
    sd2 = load_diffusion_engine(EngineOptions(engine="tiny", device="cpu"))
    assert sd2.family == SD2 and not sd2.features()["image_prompt"]
    reason = sd2.image_prompt_status()
    assert "SD 2" in reason and "sd-turbo" in reason and "SD 1.5" in reason
    pipeline = Pipeline(settings(), engine=sd2)
    with pytest.raises(ImagePromptUnavailable, match="SD 1.5"):
        pipeline.set_image_prompt(picture(1))
    assert not pipeline.has_image_prompt
    with pytest.raises(ImagePromptUnavailable, match="passthrough"):
        Pipeline(settings(), engine=PassthroughEngine()).set_image_prompt(picture(1))


def test_acceleration_that_replaces_processors_turns_image_prompts_off():
    from speakdraw.diffusion import attach_ip_adapter

    e = load_diffusion_engine(
        EngineOptions(engine="tiny", model="tiny-sd15", device="cpu", extra={"ip_adapter": "off"})
    )
    attach_ip_adapter(e, EngineOptions(engine="tiny", model="tiny-sd15", acceleration="xformers"), tiny="tiny-sd15")
    assert e.ip_adapter is None and "xformers" in e.image_prompt_status()


def _save_model(components, folder) -> None:
    components.pipeline().save_pretrained(folder)
    components.vae.save_pretrained(folder / "taesd")


def test_sd15_model_folder_gets_image_prompts_through_the_registry(engine, tmp_path, monkeypatch):
    """`--model <SD 1.5 folder>`: family read from its unet/config.json, adapter from the registry."""
    _save_model(build_components("tiny-sd15"), tmp_path / "model")
    assert check_family(tmp_path / "model") == SD15
    path, encoder = _save_tiny_adapter(engine, tmp_path)
    monkeypatch.setenv("SPEAKDRAW_IP_ADAPTER_PATH", str(path))
    monkeypatch.setenv("SPEAKDRAW_IP_ADAPTER_ENCODER_PATH", str(encoder))
    options = EngineOptions(engine="sd-turbo", model=str(tmp_path / "model"), device="cpu")
    options.extra["taesd"] = str(tmp_path / "model" / "taesd")
    loaded = load_diffusion_engine(options)
    assert loaded.family == SD15 and loaded.features()["image_prompt"]
    s = settings()
    assert same(with_image(loaded, s, picture(1)), with_image(engine, s, picture(1)))


def test_sdxl_folder_is_refused_before_loading(tmp_path):
    import json

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps(SDXL_UNET))
    with pytest.raises(EngineUnavailable, match="SDXL"):
        check_family(tmp_path)


# ----------------------------------------------------------------------------- LCM-LoRA


def _tiny_lora(folder) -> tuple[str, torch.Tensor]:
    """A kohya-format LoRA (the layout of lcm-lora-sdv1-5's file) on one tiny-sd15 projection."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    down, up = torch.randn(4, 32, generator=g), torch.randn(32, 4, generator=g)
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(8.0)},
        str(folder / "pytorch_lora_weights.safetensors"),
    )
    return str(folder), (8.0 / 4) * up @ down


def test_lcm_lora_is_fused_into_sd15_models_only(tmp_path, monkeypatch):
    c = build_components("tiny-sd15")
    sd_pipe = c.pipeline()
    folder, delta = _tiny_lora(tmp_path / "lora")
    layer = c.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    before = layer.weight.detach().clone()
    with pytest.raises(EngineUnavailable, match="SD 1.5"):
        fuse_lcm_lora(sd_pipe, folder, SD2)
    fuse_lcm_lora(sd_pipe, folder, SD15)
    assert torch.allclose(layer.weight - before, delta, atol=1e-4)
    assert layer.lora_layer is None  # fused: no per-frame LoRA cost
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("SPEAKDRAW_OFFLINE", "1")
    with pytest.raises(EngineUnavailable, match="lcm-lora-sdv1-5.*offline"):
        fuse_lcm_lora(sd_pipe, "latent-consistency/lcm-lora-sdv1-5", SD15)


def test_lcm_lora_option_on_an_sd15_folder(tmp_path):
    _save_model(build_components("tiny-sd15"), tmp_path / "model")
    folder, _ = _tiny_lora(tmp_path / "lora")
    options = EngineOptions(engine="sd-turbo", model=str(tmp_path / "model"), device="cpu")
    options.extra.update(taesd=str(tmp_path / "model" / "taesd"), lcm_lora=folder, ip_adapter="off")
    loaded = load_diffusion_engine(options)
    assert loaded.model_id.endswith(f"+ {folder}")
    plain = load_diffusion_engine(
        EngineOptions(engine="tiny", model="tiny-sd15", device="cpu", extra={"ip_adapter": "off"})
    )
    s = settings()
    assert mad(with_image(loaded, s, None)[-1], with_image(plain, s, None)[-1]) > 0  # the LoRA is in the UNet
