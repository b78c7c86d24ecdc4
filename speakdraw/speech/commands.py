"""Spoken commands: a small fixed grammar recognised in final transcripts.

A final that is *exactly* one of these phrases (case and punctuation ignored; an
optional "please", "okay"/"ok" or "hey" in front and "please" at the end are allowed)
is a command; anything else is a prompt. Whole-utterance matching means a prompt that
merely contains a command word ("a stronger storm over the sea") stays a prompt.

| say | does |
|---|---|
| "new seed" / "another seed" / "different seed" / "change the seed" / "next seed" | picks a new random `seed` |
| "stronger" / "make it stronger" / "more strength" | `strength` + 0.1 (at most 1.0) |
| "weaker" / "make it weaker" / "less strength" | `strength` - 0.1 (at least 0.0) |
| "only me" / "just me" | `mode` = "human" (repaint only the person) |
| "whole picture" / "the whole picture" / "whole frame" / "full picture" / "everything" | `mode` = "full" |
| "stop listening" | `voice_prompt` = false: finals no longer change the prompt (commands still work) |
| "start listening" | `voice_prompt` = true |
| "next style" / "previous style" / "last style" | `style` = the style shown now ± 1 (wraps 0–25) |
| "style N" / "style number N" (N = 0–25, digits or words: "style seven") | `style` = N |

Any other final becomes the prompt while `voice_prompt` is on (and sets `style` back to -1,
so the prompt picks the style engine's style again), and is ignored while it is off.

`match_command` is exact. The live transcriber also uses `fuzzy_command`: the phrases are a
closed set, so a fast decode that is *near* one ("Next tile." for "next style", "Only meat."
for "only me") is taken as that command when it has as many words, is close enough
(`FUZZY_FLOOR`) and clearly closer to it than to any other command (`FUZZY_MARGIN`); see
speech/decode_policy.py for the confidence it also needs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from speakdraw.engines.style.table import NUM_STYLES, STYLES, chosen_style
from speakdraw.settings import Settings
from speakdraw.speech.guard import normalize

STRENGTH_STEP = 0.1
PROMPT_MAX_CHARS = 1000  # Settings.prompt max_length
_PREFIXES = ("please ", "okay ", "ok ", "hey ")
_SUFFIXES = (" please",)


@dataclass
class Interpretation:
    kind: Literal["command", "prompt", "ignored"]
    changes: dict[str, Any] = field(default_factory=dict)  # a partial Settings
    description: str = ""
    command: str = ""  # the canonical phrase, for commands


def _new_seed(s: Settings) -> tuple[dict[str, Any], str]:
    seed = s.seed
    while seed == s.seed:
        seed = random.randrange(0, 2**31 - 1)
    return {"seed": seed}, f"new seed {seed}"


def _strength(delta: float) -> Callable[[Settings], tuple[dict[str, Any], str]]:
    def apply(s: Settings) -> tuple[dict[str, Any], str]:
        value = round(min(1.0, max(0.0, s.strength + delta)), 2)
        if value == s.strength:
            return {}, f"strength already at {'maximum' if delta > 0 else 'minimum'} ({s.strength:g})"
        return {"strength": value}, f"strength {s.strength:g} → {value:g}"

    return apply


def _set(field_name: str, value: Any, description: str) -> Callable[[Settings], tuple[dict[str, Any], str]]:
    def apply(s: Settings) -> tuple[dict[str, Any], str]:
        if getattr(s, field_name) == value:
            return {}, f"{description} (already)"
        return {field_name: value}, description

    return apply


def _step_style(delta: int) -> Callable[[Settings], tuple[dict[str, Any], str]]:
    """From the style shown now (set, or picked by the prompt and seed) to its neighbour, wrapping."""

    def apply(s: Settings) -> tuple[dict[str, Any], str]:
        value = (chosen_style(s.prompt, s.seed, s.style) + delta) % NUM_STYLES
        return {"style": value}, f"style {value} ({STYLES[value].name})"

    return apply


_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
).split()


def _number_words(n: int) -> str:
    return _NUMBER_WORDS[n] if n <= 20 else f"twenty {_NUMBER_WORDS[n - 20]}"


def _style_phrases(n: int) -> tuple[str, ...]:
    return tuple(f"style {how}{num}" for how in ("", "number ") for num in (str(n), _number_words(n)))


COMMANDS: dict[str, tuple[tuple[str, ...], Callable[[Settings], tuple[dict[str, Any], str]]]] = {
    "new seed": (
        ("new seed", "another seed", "different seed", "change the seed", "change seed", "next seed"),
        _new_seed,
    ),
    "stronger": (("stronger", "make it stronger", "more strength", "a bit stronger"), _strength(STRENGTH_STEP)),
    "weaker": (("weaker", "make it weaker", "less strength", "a bit weaker"), _strength(-STRENGTH_STEP)),
    "only me": (("only me", "just me"), _set("mode", "human", "only the person is repainted")),
    "whole picture": (
        ("whole picture", "the whole picture", "whole frame", "the whole frame", "full picture", "everything"),
        _set("mode", "full", "the whole picture is repainted"),
    ),
    "stop listening": (("stop listening",), _set("voice_prompt", False, "voice prompts off")),
    "start listening": (("start listening",), _set("voice_prompt", True, "voice prompts on")),
    "next style": (("next style", "the next style", "another style"), _step_style(1)),
    "previous style": (("previous style", "the previous style", "last style", "style back"), _step_style(-1)),
    **{f"style {n}": (_style_phrases(n), _set("style", n, f"style {n} ({STYLES[n].name})")) for n in range(NUM_STYLES)},
}
_PHRASES = {phrase: name for name, (phrases, _) in COMMANDS.items() for phrase in phrases}


def _core(text: str) -> str:
    norm = normalize(text)
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if norm.startswith(prefix):
                norm, changed = norm[len(prefix) :], True
        for suffix in _SUFFIXES:
            if norm.endswith(suffix):
                norm, changed = norm[: -len(suffix)], True
    return norm


def match_command(text: str) -> str | None:
    """The canonical command a final says, or None."""
    return _PHRASES.get(_core(text))


FUZZY_FLOOR = 0.8  # character similarity (difflib ratio) to the nearest phrase
FUZZY_MARGIN = 0.08  # ... and at least this much over the nearest phrase of another command
FUZZY_MAX_WORDS = 4  # the longest phrase ("style number twenty five"): a longer final is a prompt


@dataclass(frozen=True)
class CommandMatch:
    command: str  # canonical name (a COMMANDS key)
    phrase: str  # the phrase it is nearest to
    similarity: float  # 1.0 = exact


def fuzzy_command(text: str) -> CommandMatch | None:
    """The command `text` is, or is near enough to (see the module doc); None for anything else."""
    from difflib import SequenceMatcher

    core = _core(text)
    exact = _PHRASES.get(core)
    if exact is not None:
        return CommandMatch(exact, core, 1.0)
    words = core.split()
    if not words or len(words) > FUZZY_MAX_WORDS:
        return None
    best: dict[str, tuple[float, str]] = {}
    for phrase, name in _PHRASES.items():
        if len(phrase.split()) != len(words):  # "everything red" is not "everything"
            continue
        ratio = SequenceMatcher(None, core, phrase, autojunk=False).ratio()
        if ratio > best.get(name, (0.0, ""))[0]:
            best[name] = (ratio, phrase)
    ranked = sorted(best.items(), key=lambda kv: kv[1][0], reverse=True)
    if not ranked or ranked[0][1][0] < FUZZY_FLOOR:
        return None
    if len(ranked) > 1 and ranked[0][1][0] - ranked[1][1][0] < FUZZY_MARGIN:
        return None  # between two commands ("stat listening"): not sure which
    name, (ratio, phrase) = ranked[0]
    return CommandMatch(name, phrase, round(ratio, 3))


def interpret(text: str, settings: Settings, command: str | None = None) -> Interpretation:
    """What a final transcript does to `settings` (nothing is applied here).

    `command`: the command the transcriber recognised in it (a fuzzy match), if any; else the
    text must be exactly a command phrase to be one.
    """
    text = text.strip()
    if not normalize(text):
        return Interpretation("ignored", description="empty")
    name = command if command in COMMANDS else match_command(text)
    if name is not None:
        changes, description = COMMANDS[name][1](settings)
        return Interpretation("command", changes, description, name)
    if not settings.voice_prompt:
        return Interpretation("ignored", description="voice prompts are off")
    prompt = text[:PROMPT_MAX_CHARS]
    changes: dict[str, Any] = {"prompt": prompt}
    if settings.style >= 0:  # a spoken prompt hands the style choice back to the prompt
        changes["style"] = -1
    return Interpretation("prompt", changes, f"prompt: {prompt}")
