"""The diffusion engine on the `tiny` model, CPU: what a frame becomes and what a settings change costs."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from streamdiffusion import StreamDiffusion

from speakdraw.diffusion import LOADS, DiffusionEngine, load_diffusion_engine, t_index_list
from speakdraw.engines import EngineOptions
from speakdraw.settings import Settings

SIZE = 64


@pytest.fixture(scope="module")
def engine() -> Iterator[DiffusionEngine]:
    # One intra-op thread: the tiny model gains nothing from more, and CI runners are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_diffusion_engine(EngineOptions(engine="tiny", device="cpu"))
    torch.set_num_threads(threads)


def frame(shift: int = 0, h: int = SIZE, w: int = SIZE) -> np.ndarray:
    """A smooth colour ramp with a bright square: structure the 8x VAE can keep."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, ((xx + yy) * 127 // (w + h)) + 64], -1)
    rgb[h // 4 + shift : h // 2 + shift, w // 4 : w // 2] = 230
    return rgb.astype(np.uint8)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def settings(**kw) -> Settings:
    return Settings(width=SIZE, height=SIZE, **{"prompt_fade_frames": 0, **kw})


def run(engine: DiffusionEngine, s: Settings, frames: list[np.ndarray]) -> list[np.ndarray]:
    session = engine.new_session(s)
    return [session.process(f) for f in frames]


# ----------------------------------------------------------------------------- what must be shown (1)


def test_output_has_the_input_size(engine):
    for h, w in ((SIZE, SIZE), (48, 80), (50, 70)):  # 50x70 is not a multiple of 8: resized internally
        out = engine.new_session(settings()).process(frame(h=h, w=w))
        assert out.shape == (h, w, 3) and out.dtype == np.uint8


def test_a_read_only_frame_is_taken_without_a_warning_and_left_as_it_was(engine):
    """A decoder's frame can be a read-only view: torch would share it with a UserWarning (CI printed one)."""
    rgb = frame()
    before = rgb.copy()
    rgb.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out = engine.new_session(settings()).process(rgb)
    assert out.shape == rgb.shape and np.array_equal(rgb, before)


def test_output_changes_when_the_prompt_changes(engine):
    img = frame()
    cat = run(engine, settings(prompt="a cat"), [img])[0]
    dog = run(engine, settings(prompt="a dog in the snow"), [img])[0]
    assert mad(cat, dog) > 0.5
    session = engine.new_session(settings(prompt="a cat"))
    assert np.array_equal(session.process(img), cat)
    new = settings(prompt="a dog in the snow")
    session.update(new, {"prompt"})
    assert np.array_equal(session.process(img), dog)  # prompt swapped in place == a fresh session


def test_same_seed_same_output_different_seed_different_output(engine):
    frames = [frame(0), frame(4), frame(8)]
    s = settings(seed=11, steps=2, strength=0.6)  # steps=2: the stream batch carries state frame to frame
    first, again = run(engine, s, frames), run(engine, s, frames)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a, b)
    other = run(engine, settings(seed=12, steps=2, strength=0.6), frames)
    # The first output of a 2-step stream is denoised from the (zero) batch buffer, not from noise.
    assert all(mad(a, b) > 5 for a, b in zip(first[1:], other[1:], strict=True))


def test_strength_orders_distance_from_input(engine):
    img = frame()
    distances = [mad(run(engine, settings(strength=s), [img])[0], img) for s in (0.02, 0.5, 0.98)]
    low, mid, high = distances
    assert low < mid < high, distances
    assert high > 4 * low, distances
    # "close" at strength ~0 means close to what the VAE alone gives back (8x8 pixelation here).
    assert low < mad(engine.vae_roundtrip(img), img) + 15


def test_strength_maps_to_t_index_list():
    assert t_index_list(0.0, 1) == [49]
    assert t_index_list(1.0, 1) == [0]
    assert t_index_list(0.5, 2) == [24, 37]
    for strength in np.linspace(0, 1, 11):
        for steps in (1, 2, 3, 4):
            ids = t_index_list(float(strength), steps)
            assert len(ids) == steps and ids == sorted(set(ids)) and 0 <= ids[0] and ids[-1] <= 49


# ----------------------------------------------------------------------------- what must be shown (3)


def test_settings_changes_never_reload_and_encode_text_only_for_prompts(engine):
    loads = dict(LOADS)
    unet, vae, text_encoder = engine.unet, engine.vae, engine.components.text_encoder
    session = engine.new_session(settings())
    img = frame()
    session.process(img)
    changes = [
        ({"seed": 99}, 0),
        ({"strength": 0.8}, 0),
        ({"steps": 3}, 0),
        ({"cfg_type": "self", "guidance_scale": 1.5}, 0),
        ({"delta": 0.7}, 0),
        ({"width": 80, "height": 72}, 0),
        ({"prompt": "a brand new prompt nobody used"}, 1),
        ({"negative_prompt": "blurry, never seen before"}, 1),
    ]
    current = session.settings
    for partial, encodes in changes:
        before = engine.text_encodes
        new = current.updated(partial)
        session.update(new, new.changed_fields(current))
        current = new
        out = session.process(frame(h=current.height, w=current.width))
        assert out.shape == (current.height, current.width, 3)
        assert engine.text_encodes - before == encodes, partial
        assert session.stream.unet is unet and session.stream.vae is vae
        assert session.stream.text_encoder is text_encoder
    assert LOADS == loads


# ----------------------------------------------------------------------------- faithful to StreamDiffusion


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"steps": 2, "strength": 0.7},
        {"steps": 3, "cfg_type": "self", "guidance_scale": 1.4, "delta": 0.8},
        {"steps": 2, "cfg_type": "full", "guidance_scale": 2.0, "negative_prompt": "ugly"},
        {"steps": 2, "cfg_type": "initialize", "guidance_scale": 1.6, "negative_prompt": "dark"},
    ],
)
def test_matches_streamdiffusion_prepare(engine, kw):
    """Our piecewise preparation == StreamDiffusion.prepare(); our frame == its encode→predict→decode."""
    s = settings(prompt="a lighthouse", seed=5, **kw)
    frames = [frame(0), frame(3), frame(6), frame(9)]
    ours = run(engine, s, frames)
    ref = StreamDiffusion(
        engine.sd_pipe,
        t_index_list=t_index_list(s.strength, s.steps),
        torch_dtype=engine.dtype,
        width=SIZE,
        height=SIZE,
        cfg_type=s.cfg_type,
    )
    ref.prepare(
        s.prompt,
        s.negative_prompt,
        num_inference_steps=50,
        guidance_scale=s.guidance_scale,
        delta=s.delta,
        generator=torch.Generator(),
        seed=s.seed,
    )
    with torch.no_grad():
        for f, out in zip(frames, ours, strict=True):
            x = torch.from_numpy(f).permute(2, 0, 1)[None].float() / 127.5 - 1
            img = ref.decode_image(ref.predict_x0_batch(ref.encode_image(x)))
            expected = ((img[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
            assert np.array_equal(out, expected)


def test_sessions_do_not_leak_into_each_other(engine):
    a_settings = settings(prompt="session a", seed=1, steps=2, strength=0.6)
    b_settings = settings(prompt="session b", seed=2, steps=3, cfg_type="self", guidance_scale=1.3)
    frames = [frame(i) for i in range(0, 12, 3)]
    alone_a, alone_b = run(engine, a_settings, frames), run(engine, b_settings, frames)
    a, b = engine.new_session(a_settings), engine.new_session(b_settings)
    for f, ea, eb in zip(frames, alone_a, alone_b, strict=True):
        assert np.array_equal(a.process(f), ea)
        assert np.array_equal(b.process(f), eb)


# ----------------------------------------------------------------------------- prompt fade, similarity filter


def test_prompt_fades_over_the_configured_frames(engine):
    img = frame()
    start = run(engine, settings(prompt="red"), [img])[0]
    target = run(engine, settings(prompt="blue sky"), [img])[0]
    session = engine.new_session(settings(prompt="red", prompt_fade_frames=4))
    assert np.array_equal(session.process(img), start)
    session.update(settings(prompt="blue sky", prompt_fade_frames=4), {"prompt"})
    fading = [session.process(img) for _ in range(4)]
    assert not np.array_equal(fading[0], start) and not np.array_equal(fading[0], target)
    distances = [mad(f, target) for f in fading]
    assert distances[0] > distances[2] >= 0 and distances[3] == 0.0, distances
    assert not session.fading


def test_similarity_filter_skips_without_running_or_sleeping(engine):
    calls = []
    hook = engine.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        session = engine.new_session(settings(similarity_filter=True, similarity_threshold=0.99))
        first = session.process(frame(0))
        start = time.perf_counter()
        again = session.process(frame(0))
        skip_s = time.perf_counter() - start
        assert again is first and len(calls) == 1 and session.frames_skipped == 1
        start = time.perf_counter()
        moved = session.process(255 - frame(0))  # a different picture is processed
        run_s = time.perf_counter() - start
        assert len(calls) == 2 and not np.array_equal(moved, first)
        assert skip_s < max(0.05, 0.5 * run_s), (skip_s, run_s)  # a skip costs less than a run (no sleep)
    finally:
        hook.remove()
