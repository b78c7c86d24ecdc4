"""Batched steps across calls (issue 11, point 4): N sessions in ONE UNet call give what each gets alone.

CPU, fp32, tiny models. Each session has its own prompt, seed, strength, steps / cfg_type and
(on tiny-sd15) image prompt and scale; several consecutive frames, so the stream-batch buffers,
the RCFG stock noise, the prompt fade and the similarity filter all carry state across steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speakdraw.diffusion import DiffusionEngine, load_diffusion_engine
from speakdraw.engines import EngineOptions
from speakdraw.settings import Settings

SIZE = 64
FRAMES = 6


@pytest.fixture(autouse=True)
def _one_torch_thread(torch_one_thread):
    """Tiny models: one thread is faster and leaves the other core to the rest of the suite."""


def load(model: str = "tiny", **kw) -> DiffusionEngine:
    return load_diffusion_engine(EngineOptions(engine="tiny", model=model, device="cpu", **kw))


@pytest.fixture(scope="module")
def sd15() -> DiffusionEngine:
    return load("tiny-sd15")


@pytest.fixture(scope="module")
def tiny() -> DiffusionEngine:
    return load("tiny")


def camera(i: int, shift: int = 0) -> np.ndarray:
    """Moving, textured frames (like a camera's), a little different per session."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([xx * 4, yy * 4, (xx + yy + 16 * shift) % 256], -1).astype(np.int16)
    rgb += np.random.default_rng(shift).integers(-40, 40, rgb.shape, dtype=np.int16)
    rgb[8 + 3 * i : 24 + 3 * i, 16 + shift : 40 + shift] = 230 - 20 * shift
    return rgb.clip(0, 255).astype(np.uint8)


def picture(seed: int) -> np.ndarray:
    blocks = np.random.default_rng(seed).integers(0, 256, (10, 13, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((10, 10, 1), np.uint8))


SESSIONS = [
    ({"prompt": "a red fox", "seed": 1, "strength": 0.5, "similarity_filter": True, "similarity_threshold": 0.999}, 1),
    ({"prompt": "blue ocean waves", "seed": 22, "strength": 0.8, "steps": 2}, None),
    (
        {"prompt": "a castle", "seed": 333, "strength": 0.6, "steps": 3, "cfg_type": "self", "guidance_scale": 1.4},
        2,
    ),
    (
        {
            "prompt": "neon city",
            "negative_prompt": "blurry",
            "seed": 4444,
            "strength": 0.7,
            "steps": 2,
            "cfg_type": "full",
            "guidance_scale": 2.0,
            "ip_adapter_scale": 1.1,
        },
        3,
    ),
]


def make(engine: DiffusionEngine, index: int, image_prompts: bool, **extra):
    kw, image = SESSIONS[index]
    session = engine.new_session(Settings(width=SIZE, height=SIZE, prompt_fade_frames=2, **{**kw, **extra}))
    if image_prompts and image is not None:
        session.set_image_prompt(engine.encode_image_prompt(picture(image)))
    return session


def frame_for(k: int, f: int) -> np.ndarray:
    """Session 0 (similarity filter on) sees frame 2 twice: its filter skips the repeat, alone and batched."""
    return camera(2 if (k == 0 and f == 3) else f, k)


def change(session, partial: dict) -> None:
    new = session.settings.updated(partial)
    session.update(new, new.changed_fields(session.settings))


def script(k: int, frame: int, session) -> None:
    """Settings changes between frames, the same whether alone or batched."""
    if frame == 2 and k == 0:
        change(session, {"prompt": "a white wolf"})  # fades over 2 frames
    if frame == 4 and k == 0:
        change(session, {"seed": 7})  # (a reseed zeroes a multi-step stream's buffer: see `warmup`)
    if frame == 3 and k == 1:
        change(session, {"strength": 0.55})


def run_alone(engine: DiffusionEngine, image_prompts: bool, n: int = 4) -> list[list[np.ndarray]]:
    outs = []
    for k in range(n):
        session = make(engine, k, image_prompts)
        frames = []
        for f in range(FRAMES):
            script(k, f, session)
            frames.append(session.process(frame_for(k, f)))
        outs.append(frames)
        assert session.frames_skipped == (1 if k == 0 else 0)
    return outs


def run_batched(engine: DiffusionEngine, image_prompts: bool, n: int = 4) -> list[list[np.ndarray]]:
    sessions = [make(engine, k, image_prompts) for k in range(n)]
    outs: list[list[np.ndarray]] = [[] for _ in range(n)]
    calls = []
    hook = engine.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        for f in range(FRAMES):
            for k, session in enumerate(sessions):
                script(k, f, session)
            before = len(calls)
            results = engine.process_batch([(s, frame_for(k, f)) for k, s in enumerate(sessions)])
            assert len(calls) - before == 1, "one UNet call for all sessions"
            for k, out in enumerate(results):
                outs[k].append(out)
    finally:
        hook.remove()
    assert [s.frames_skipped for s in sessions] == [1] + [0] * (n - 1)
    return outs


def warmup(k: int) -> int:
    """Frames a `steps`-step stream denoises (partly) from StreamDiffusion's all-zero start buffer.

    A constant latent makes every GroupNorm normalise last-bit noise (variance ~0, eps 1e-6),
    so those frames differ by whatever the batch size changes in the last bit, amplified
    ~10^4x: not a property of batching but of that degenerate start, alone or batched. From
    frame `steps - 1` on, every row of the stream batch comes from a real camera frame.
    """
    return SESSIONS[k][0].get("steps", 1) - 1


def assert_close(alone: list[list[np.ndarray]], batched: list[list[np.ndarray]]) -> None:
    for k, (xs, ys) in enumerate(zip(alone, batched, strict=True)):
        for f, (a, b) in enumerate(zip(xs, ys, strict=True)):
            assert a.shape == b.shape
            if f < warmup(k):
                continue
            diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
            assert diff.max() <= 2 and diff.mean() <= 0.05, (k, f, int(diff.max()), float(diff.mean()))


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ----------------------------------------------------------------------------- what must be shown


def test_batched_equals_alone_with_image_prompts_tiny_sd15(sd15):
    """Sessions 0, 2, 3 have image prompts (own picture, own scale), session 1 none: padded in one call."""
    alone = run_alone(sd15, image_prompts=True)
    batched = run_batched(sd15, image_prompts=True)
    assert_close(alone, batched)
    # the sessions really differ from each other (their own prompt, seed, image): no cross-talk hides here
    last = [frames[-1] for frames in batched]
    assert all(mad(last[i], last[j]) > 1.0 for i in range(4) for j in range(i + 1, 4))


def test_batched_equals_alone_default_tiny(tiny):
    assert_close(run_alone(tiny, image_prompts=False), run_batched(tiny, image_prompts=False))


def test_image_prompt_matters_in_the_batch(sd15):
    """The batch keeps each session's image: without the image prompts the outputs differ."""
    with_images = run_batched(sd15, image_prompts=True, n=2)
    without = run_batched(sd15, image_prompts=False, n=2)
    assert mad(with_images[0][-1], without[0][-1]) > 0.5
    assert_close([without[1]], [with_images[1]])  # session 1 has no image prompt either way


def test_per_session_scale_in_one_call(sd15):
    """Two sessions, same image and seed, scales 0 and 1.5: scale 0 is the plain model, in the same UNet call."""
    image = sd15.encode_image_prompt(picture(5))
    s = Settings(width=SIZE, height=SIZE, prompt_fade_frames=0, seed=9)
    plain = sd15.new_session(s)
    zero = sd15.new_session(s.updated({"ip_adapter_scale": 0.0}))
    strong = sd15.new_session(s.updated({"ip_adapter_scale": 1.5}))
    zero.set_image_prompt(image)
    strong.set_image_prompt(image)
    alone_plain = plain.process(camera(0))
    got_zero, got_strong = sd15.process_batch([(zero, camera(0)), (strong, camera(0))])
    assert np.abs(got_zero.astype(np.int16) - alone_plain).max() <= 2
    assert mad(got_strong, alone_plain) > 1.0


def test_similarity_filter_and_sizes_in_a_batch(tiny):
    """A skipped session does not join the step; another model size gets its own sub-batch (two UNet calls)."""
    s = Settings(width=SIZE, height=SIZE, prompt_fade_frames=0)
    still = tiny.new_session(s.updated({"similarity_filter": True, "similarity_threshold": 0.99}))
    moving = tiny.new_session(s.updated({"seed": 3}))
    wide = tiny.new_session(s.updated({"seed": 4}))
    wide_frame = np.zeros((48, 80, 3), np.uint8) + 90
    first = tiny.process_batch([(still, camera(0)), (moving, camera(0)), (wide, wide_frame)])
    before = tiny.batches
    second = tiny.process_batch([(still, camera(0)), (moving, camera(1)), (wide, wide_frame)])
    assert tiny.batches - before == 2  # 64x64 (moving) and 80x48 (wide); `still` skipped
    assert second[0] is first[0] and still.frames_skipped == 1
    assert second[2].shape == (48, 80, 3)
    with pytest.raises(ValueError, match="one frame per session"):
        tiny.process_batch([(moving, camera(2)), (moving, camera(3))])


def test_kl_vae_samples_each_row_with_its_own_generator():
    """--no-taesd: the KL VAE samples its latent; each session's row uses that session's generator."""
    engine = load("tiny", use_taesd=False)
    alone = run_alone(engine, image_prompts=False, n=3)
    batched = run_batched(engine, image_prompts=False, n=3)
    assert_close(alone, batched)


def test_the_batch_step_failing_raises_for_everyone(tiny, monkeypatch):
    a = tiny.new_session(Settings(width=SIZE, height=SIZE))
    b = tiny.new_session(Settings(width=SIZE, height=SIZE, seed=5))

    def broken(*args, **kwargs):
        raise RuntimeError("device fault")

    monkeypatch.setattr(tiny, "unet", broken)
    with pytest.raises(RuntimeError, match="device fault"):
        tiny.process_batch([(a, camera(0)), (b, camera(0))])
    monkeypatch.undo()
    assert tiny.process_batch([(a, camera(1))])[0].shape == (SIZE, SIZE, 3)
    assert torch.is_grad_enabled()  # no_grad does not leak out of the step


def test_batched_equals_alone_tiny_sdxl():
    """SDXL: each session's pooled embeds and time ids go with its rows (added_cond_kwargs), image prompts padded."""
    engine = load("tiny-sdxl")
    assert engine.is_sdxl
    assert_close(run_alone(engine, image_prompts=True), run_batched(engine, image_prompts=True))


def test_row_limit_cuts_the_batch_into_several_calls(tiny, monkeypatch):
    """TensorRT engines take at most `max_unet_rows` rows: the batch is cut, outputs unchanged."""
    s = Settings(width=SIZE, height=SIZE, prompt_fade_frames=0, steps=2, cfg_type="full", guidance_scale=2.0)
    free = [tiny.new_session(s.updated({"seed": k})) for k in range(3)]
    cut = [tiny.new_session(s.updated({"seed": k})) for k in range(3)]
    for f in range(3):
        expected = tiny.process_batch([(x, camera(f, k)) for k, x in enumerate(free)])
        monkeypatch.setattr(tiny, "max_unet_rows", 8)  # 4 rows per session: 2 + 1 calls
        before = tiny.batches
        got = tiny.process_batch([(x, camera(f, k)) for k, x in enumerate(cut)])
        monkeypatch.undo()
        assert tiny.batches - before == 2
        if f >= 1:  # frame 0 of a 2-step stream is its warm-up frame (see `warmup`)
            for e, g in zip(expected, got, strict=True):
                diff = np.abs(e.astype(np.int16) - g.astype(np.int16))
                assert diff.max() <= 2 and diff.mean() <= 0.05, (int(diff.max()), float(diff.mean()))
