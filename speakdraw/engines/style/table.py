"""The 26 styles of the multi-style network, named from what each looks like, and prompt → style.

The model ships with numbered styles only. Each name and its keywords below were written by
looking at the network's output on `skimage.data.astronaut()` with that one style
(tests/artifacts/style_contact_sheet.png). A prompt is matched word by word against the
names and keywords; no match picks a style from the prompt and the seed, deterministically.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

NUM_STYLES = 26


@dataclass(frozen=True)
class Style:
    index: int
    name: str
    keywords: tuple[str, ...]


def _s(index: int, name: str, keywords: str) -> Style:
    return Style(index, name, tuple(k.strip() for k in keywords.split(",") if k.strip()))


# index, short name, keywords (what the output on the astronaut looks like)
STYLES: tuple[Style, ...] = (
    _s(0, "pastel", "pastel, pale, soft, light blue, yellow, gentle, calm"),
    _s(1, "comic", "comic, cartoon, pop art, black outlines, bold lines, yellow, flat"),
    _s(2, "ink sketch", "ink, sketch, drawing, pen, outline, line drawing, cream, peach"),
    _s(3, "abstract", "abstract, expressionist, chaos, chaotic, wild, kandinsky, strokes, colourful, colorful"),
    _s(4, "red poster", "red, poster, crimson, cream, print, screen print"),
    _s(5, "warm impressionist", "impressionist, impressionism, warm, orange, autumn, sunset, monet"),
    _s(6, "night cells", "cells, dots, spots, bubbles, leopard, dark blue, night, navy"),
    _s(7, "fauvist", "fauvist, fauvism, matisse, bold colours, bold colors, blue and yellow, vivid"),
    _s(8, "crayon", "crayon, coloured pencil, colored pencil, pink, child, childlike, scribble, bright"),
    _s(9, "textile", "textile, pattern, fabric, carpet, tapestry, rug, teal, maze, batik"),
    _s(10, "oil brown", "oil, oil painting, brown, rust, copper, earthy, old master, rembrandt"),
    _s(11, "golden engraving", "engraving, gold, golden, hatching, etching, woodcut, desert, sand"),
    _s(12, "lavender", "lavender, purple, violet, dreamy, soft focus, haze, misty"),
    _s(13, "green glass", "green, lime, stained glass, glass, jungle, forest, emerald"),
    _s(14, "watercolour", "watercolour, watercolor, washed, faded, pale blue, ice, icy, winter, frost, snow"),
    _s(15, "doodle", "doodle, line art, tangle, lines, scribbles, candy, sweet, pastel lines"),
    _s(16, "swirls", "swirl, swirls, van gogh, starry night, brush strokes, brushstrokes, blue and gold"),
    _s(17, "bricks", "bricks, brick, blocks, tiles, geometric, mondrian, lego, city, rectangles"),
    _s(18, "sepia", "sepia, vintage, old photo, parchment, antique, beige, retro"),
    _s(19, "blue night", "blue, ocean, sea, water, waves, underwater, midnight, deep blue"),
    _s(20, "fire", "fire, flame, flames, lava, inferno, hell, burning, red and black, dragon, volcano"),
    _s(21, "paper cutout", "paper, cutout, cut out, collage, flat, pink, minimal"),
    _s(22, "gouache", "gouache, illustration, storybook, picture book, children's book"),
    _s(23, "charcoal", "charcoal, dark, gloomy, muted, grey, gray, fog, foggy, noir, smoke"),
    _s(24, "delft", "delft, porcelain, china, blue and white, ceramic, etching"),
    _s(25, "mosaic", "mosaic, ornate, klimt, byzantine, detailed, intricate, gold and blue"),
)
assert len(STYLES) == NUM_STYLES and all(s.index == i for i, s in enumerate(STYLES))

NEAR = 0.75  # styles scoring at least this share of the best score are "near matches" (the seed picks)
_NAME_WEIGHT = 2.0  # a style's own name counts double


_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> str:
    """Lower-case words joined by single spaces, padded, so phrases match on word boundaries."""
    return " " + " ".join(_WORD.findall(text.lower())) + " "


def _hit(phrase: str, words: str) -> bool:
    return _words(phrase) in words


def scores(prompt: str) -> list[float]:
    """How well each style matches `prompt` (0 = not at all): name hits count double, keywords once."""
    words = _words(prompt)
    out = []
    for style in STYLES:
        score = _NAME_WEIGHT if _hit(style.name, words) else 0.0
        score += sum(1.0 for keyword in style.keywords if keyword != style.name and _hit(keyword, words))
        out.append(score)
    return out


def near_matches(prompt: str) -> list[int]:
    """Styles whose score is within `NEAR` of the best (ascending index); empty when nothing matches."""
    got = scores(prompt)
    best = max(got)
    if best <= 0:
        return []
    return [i for i, score in enumerate(got) if score >= NEAR * best]


def pick_style(prompt: str, seed: int) -> int:
    """The style a prompt asks for: the seed picks among near matches; no match → from prompt + seed.

    Deterministic across processes (crc32, not Python's salted `hash`).
    """
    near = near_matches(prompt)
    if near:
        return near[seed % len(near)]
    key = f"{seed}:{_words(prompt).strip()}".encode()
    return zlib.crc32(key) % NUM_STYLES


def chosen_style(prompt: str, seed: int, style: int) -> int:
    """`style` when set (0–25), else the prompt's pick: what a session shows."""
    return style if style >= 0 else pick_style(prompt, seed)


def describe(index: int) -> str:
    return f"style {index} ({STYLES[index].name})"
