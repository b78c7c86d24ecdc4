"""Human mode: alpha·diffused + (1−alpha)·original, with the real RVM matte.

The "diffusion" here is the passthrough engine's `invert` effect, which changes every
pixel, so any pixel that comes back unchanged was put back from the camera frame.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from skimage import data

from speakdraw import Pipeline, Settings
from speakdraw.compositing import composite, feather
from speakdraw.matting import RVMMatting, load_matting


def _naive_box(alpha: np.ndarray, radius: int) -> np.ndarray:
    padded = np.pad(alpha.astype(np.float64), radius, mode="edge")
    h, w = alpha.shape
    size = 2 * radius + 1
    out = np.zeros((h, w))
    for dy in range(size):
        for dx in range(size):
            out += padded[dy : dy + h, dx : dx + w]
    return out / size**2


@pytest.mark.parametrize("radius", [1, 2, 5])
def test_feather_is_a_box_blur_with_edge_padding(radius):
    alpha = np.random.default_rng(radius).random((37, 53)).astype(np.float32)
    got = feather(alpha, radius)
    assert got.shape == alpha.shape and got.dtype == np.float32
    assert np.allclose(got, _naive_box(alpha, radius), atol=1e-5)


def test_feather_keeps_flat_regions_and_softens_edges():
    alpha = np.zeros((20, 40), dtype=np.float32)
    alpha[:, 20:] = 1.0
    out = feather(alpha, 3)
    assert np.array_equal(feather(alpha, 0), alpha)
    assert np.all(out[:, :17] == 0) and np.allclose(out[:, 23:], 1)
    ramp = out[10, 16:24]
    assert np.all(np.diff(ramp) > 0) and np.allclose(ramp[1:-1], np.arange(1, 7) / 7, atol=1e-6)


def test_composite_math():
    fg = np.full((4, 4, 3), 200, np.uint8)
    bg = np.full((4, 4, 3), 100, np.uint8)
    alpha = np.array([[0.0, 1.0, 0.5, -1.0]] * 4, dtype=np.float32)
    out = composite(fg, bg, alpha)
    assert out.dtype == np.uint8
    assert (out[:, 0] == 100).all() and (out[:, 1] == 200).all() and (out[:, 2] == 150).all()
    assert (out[:, 3] == 100).all()  # alpha is clipped to [0, 1]


@pytest.fixture(scope="module")
def rvm() -> RVMMatting:
    return load_matting("cpu", progress=False)


def test_human_mode_repaints_only_the_person(rvm):
    image = data.astronaut()
    settings = Settings(mode="human", passthrough_effect="invert", width=512, height=512)
    pipeline = Pipeline(settings, matting=rvm)
    out = pipeline.process(image)
    assert pipeline.last_timings_ms["matte"] > 0

    alpha = feather(rvm.new_session().alpha(image), settings.matte_feather)  # what the pipeline saw
    background, person = alpha < 1e-3, alpha > 0.999
    assert background.mean() > 0.3 and person.mean() > 0.2  # both sides are big, the test is not vacuous
    assert np.array_equal(out[background], image[background])  # the real background stays, exactly
    changed = np.abs(out[person].astype(int) - (255 - image[person].astype(int)))
    assert changed.max() <= 1  # the person is the engine's output

    # the hand-checked regions of test_matting.py
    wall = (slice(20, 200), slice(320, 370))
    face = (slice(80, 140), slice(195, 245))
    assert np.mean(np.all(out[wall] == image[wall], axis=-1)) > 0.99
    assert np.mean(np.all(out[face] == 255 - image[face], axis=-1)) > 0.95


def test_mode_switches_live_and_full_mode_skips_matting(rvm):
    image = data.astronaut()
    pipeline = Pipeline(Settings(mode="human", passthrough_effect="invert"), matting=rvm)
    matte_session = pipeline._matting_session
    first = pipeline.process(image)
    assert matte_session.frames == 1

    pipeline.update({"mode": "full"})
    full = pipeline.process(image)
    assert np.array_equal(full, 255 - image)  # every pixel repainted
    assert matte_session.frames == 1 and pipeline.last_timings_ms["matte"] == 0.0  # no matte cost

    pipeline.update({"mode": "human"})  # back to human: the stale recurrent state is dropped
    again = pipeline.process(image)
    assert matte_session.frames == 2
    assert np.array_equal(again, first)  # same as a first frame: composite, not the full repaint
    background = feather(rvm.new_session().alpha(image), 2) < 1e-3
    assert np.array_equal(again[background], image[background])


def test_matte_runs_while_the_engine_repaints(rvm):
    """The matte overlaps the engine: a frame costs about max(matte, diffuse), not their sum; same output."""
    from speakdraw.engines import PassthroughEngine

    image = np.ascontiguousarray(data.astronaut())
    settings = Settings(mode="human", passthrough_effect="invert")
    engine = PassthroughEngine(simulate_cost_ms=80.0)  # a model step that blocks its thread for 80 ms
    with ThreadPoolExecutor(1, thread_name_prefix="test-matte") as pool:
        assert not Pipeline(settings, engine=engine, matting=rvm).overlap_matting  # no executor: one thread
        overlapped = Pipeline(settings, engine=engine, matting=rvm, matte_executor=pool)
        assert overlapped.overlap_matting  # passthrough leaves the CPU to RVM
        serial = Pipeline(settings, engine=engine, matting=rvm, overlap_matting=False, matte_executor=pool)
        totals = {"overlapped": [], "serial": []}
        for _ in range(8):
            a, b = overlapped.process(image), serial.process(image)
            assert np.array_equal(a, b)
            totals["overlapped"].append(overlapped.last_timings_ms)
            totals["serial"].append(serial.last_timings_ms)
    # the fastest of 8 frames of each: what the code costs, not what another process took from the CPU meanwhile
    over = np.min([t["total"] for t in totals["overlapped"]])
    ser = np.min([t["total"] for t in totals["serial"]])
    matte = np.min([t["matte"] for t in totals["overlapped"]])
    assert matte > 5.0  # RVM really ran
    assert ser >= 80.0 + 0.8 * matte, totals
    assert over < ser - 0.5 * min(matte, 80.0), (over, ser, matte)
