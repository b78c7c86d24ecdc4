"""Spoken style commands ("next style", "previous style", "style N") beside the other commands (test_speech.py)."""

from __future__ import annotations

import pytest

from speakdraw.engines.style.table import pick_style
from speakdraw.settings import Settings
from speakdraw.speech.commands import interpret, match_command


def test_style_n_in_digits_and_words():
    s = Settings()
    assert interpret("Style 5.", s).changes == {"style": 5}
    assert interpret("style twenty-five", s).changes == {"style": 25}
    assert interpret("Okay, style number seven, please!", s).changes == {"style": 7}
    assert interpret("style zero", s).changes == {"style": 0}
    assert interpret("style 7", Settings(style=7)).changes == {}  # already
    for text in ("style 26", "style twenty six", "a style of fire", "style"):
        assert match_command(text) is None, text
    assert interpret("style 26", s).kind == "prompt"


@pytest.mark.parametrize("prompt, seed", [("a watercolor painting", 2), ("a castle on a hill", 11)])
def test_next_and_previous_step_from_the_style_shown_now(prompt, seed):
    s = Settings(prompt=prompt, seed=seed)
    shown = pick_style(prompt, seed)
    nxt = interpret("Next style.", s)
    assert nxt.kind == "command" and nxt.command == "next style"
    assert nxt.changes == {"style": (shown + 1) % 26}
    assert interpret("previous style", s).changes == {"style": (shown - 1) % 26}
    assert interpret("next style", Settings(style=25)).changes == {"style": 0}  # wraps
    assert interpret("previous style", Settings(style=0)).changes == {"style": 25}
    for phrase in ("next style", "previous style", "style 3"):
        s.updated(interpret(phrase, s).changes)  # every change is valid Settings


def test_a_spoken_prompt_hands_the_style_back_to_the_prompt():
    assert interpret("a dragon made of fire", Settings(style=4)).changes == {
        "prompt": "a dragon made of fire",
        "style": -1,
    }
    assert interpret("a dragon made of fire", Settings()).changes == {"prompt": "a dragon made of fire"}


def test_style_field_bounds():
    with pytest.raises(ValueError):
        Settings(style=26)
    with pytest.raises(ValueError):
        Settings(style=-2)
