"""What people say to a painter: the bias text that steers Whisper towards it, and the words in it.

Whisper reads a "previous text" before each window (faster-whisper's `initial_prompt`, the same
slot its `hotwords` use, and openai-whisper's `initial_prompt`). Words in it become much more
likely: with tiny.en, espeak's "a watercolor painting of a dragon" comes back as "at Walker
color painting of a dragon" without it and right with it. The text is built from

- common art media and styles (`ART_TERMS`), then the `style` engine's style names and the
  keywords that are art words (speakdraw/engines/style/table.py), up to a word budget;
- the spoken command phrases (speech/commands.py), one short sentence each. Written as a comma
  list they made tiny.en repeat them ("stronger, stronger, stronger"); as sentences far less;
- words from `--stt-vocabulary FILE` (one term a line, `#` comments);
- the call's recent typed prompts, last: nearest the audio, where Whisper weighs text most.

Its length is bounded (`MAX_WORDS` here, `stt.MAX_PROMPT_TOKENS` in the decoder): every bias
token costs decoder time on every step (measured on tiny.en: little, ~6 ms of ~180 at load 10;
the unbiased no-speech step the guard needs costs ~16 ms more). The guard reads the bias text
back from each `Transcript.prompt`: a final made only of its words must be more than usually
sure to be let through (speech/guard.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speakdraw.engines.style.table import STYLES

# Media and styles people ask a painter for, most useful first (the budget may cut the tail).
ART_TERMS = (
    "watercolor",
    "oil painting",
    "acrylic",
    "charcoal",
    "pencil sketch",
    "ink drawing",
    "pastel",
    "gouache",
    "crayon",
    "comic",
    "anime",
    "manga",
    "pixel art",
    "cyberpunk",
    "steampunk",
    "impressionist",
    "Van Gogh",
    "Monet",
    "pop art",
    "mosaic",
    "stained glass",
    "sepia",
    "neon",
    "surreal",
)
# Style-table words that are everyday English or colours: Whisper hears them anyway, and they
# would only spend the budget.
_PLAIN = frozenset(
    "outlines poster colours colors colourful colorful soft light blue yellow gentle calm black bold "
    "lines flat drawing pen outline cream peach chaos chaotic wild strokes red crimson print warm orange "
    "autumn sunset cells dots spots bubbles dark night navy vivid pink child bright pattern teal maze "
    "brown rust copper earthy gold golden desert sand purple violet dreamy haze misty green lime jungle "
    "forest emerald washed faded pale ice icy winter frost snow lines candy sweet blue water waves ocean "
    "sea underwater midnight deep fire flame flames burning hell dragon volcano paper cut out minimal "
    "illustration dark gloomy muted grey gray fog foggy smoke china detailed intricate old photo vintage "
    "city blocks tiles rectangles bricks brick beige retro antique".split()
)
# Example sentences in the shape most prompts take ("a ... painting of a ..."): with them tiny.en
# keeps the leading "a" and hears "an oil painting of a ship" rather than "... and a shape".
_EXAMPLES = ("A watercolor painting of a dragon.", "An oil painting of a cat.")
# The whole bias text, in words: ~1.6 tokens a word (commas, full stops, rare words) keeps it
# within stt.MAX_PROMPT_TOKENS, which would otherwise cut its start.
MAX_WORDS = 72
MAX_RECENT = 2  # typed prompts kept
MAX_RECENT_WORDS = 20  # of each
MAX_TYPED_WORDS = 28  # of all of them: art terms keep at least a dozen words


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def style_terms() -> list[str]:
    """The style table's names and its keywords that are art words, in table order, no repeats."""
    out: list[str] = []
    for style in STYLES:
        for term in (style.name, *style.keywords):
            if all(w in _PLAIN for w in _words(term)):
                continue
            out.append(term)
    return out


def read_vocabulary_file(path: str | Path) -> list[str]:
    """`--stt-vocabulary FILE`: one word or phrase a line; blank lines and `#` comments are skipped."""
    terms = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        term = line.split("#", 1)[0].strip()
        if term:
            terms.append(" ".join(term.split()))
    return terms


def command_sentences() -> list[str]:
    """One short sentence per spoken command (the canonical phrase; "style seven" stands for style N)."""
    from speakdraw.speech.commands import COMMANDS

    names = [name for name in COMMANDS if not name.startswith("style ")] + ["style seven"]
    return [name[0].upper() + name[1:] + "." for name in names]


def _dedupe(terms: Iterable[str]) -> list[str]:
    """Terms in order, without those whose every word an earlier term already has ("ink" after "ink drawing")."""
    seen: set[str] = set()
    out = []
    for term in terms:
        words = _words(term)
        if words and not all(w in seen for w in words):
            seen.update(words)
            out.append(term)
    return out


def _take(terms: Sequence[str], budget: int) -> list[str]:
    out, used = [], 0
    for term in terms:
        n = len(term.split())
        if used + n > budget:
            break
        out.append(term)
        used += n
    return out


@dataclass(frozen=True)
class Vocabulary:
    """The call-independent part of the bias text; `prompt(recent)` adds a call's typed prompts."""

    extra: tuple[str, ...] = ()  # --stt-vocabulary FILE terms: first in the term list
    terms: tuple[str, ...] = field(init=False)
    commands: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", tuple(_dedupe([*self.extra, *ART_TERMS, *style_terms()])))
        object.__setattr__(self, "commands", tuple(command_sentences()))

    @classmethod
    def from_file(cls, path: str | Path | None) -> Vocabulary:
        return cls(tuple(read_vocabulary_file(path)) if path else ())

    def prompt(self, recent: Sequence[str] = ()) -> str:
        """The bias text: examples, terms, commands, then up to `MAX_RECENT` recent typed prompts.

        Whole terms are dropped to stay within `MAX_WORDS` (typed prompts first take their share).
        """
        typed = []
        for line in list(recent)[-MAX_RECENT:]:
            line = " ".join(line.split()[:MAX_RECENT_WORDS]).strip()
            if line:
                line = line[0].upper() + line[1:]
                typed.append(line if line[-1] in ".!?" else line + ".")
        while len(" ".join(typed).split()) > MAX_TYPED_WORDS:
            typed.pop(0)
        fixed = len(" ".join([*_EXAMPLES, *self.commands, *typed]).split())
        terms = ", ".join(_take(self.terms, max(0, MAX_WORDS - fixed)))
        terms = terms[:1].upper() + terms[1:] + "." if terms else ""
        return " ".join(p for p in (*_EXAMPLES, terms, *self.commands, *typed) if p)


@dataclass
class RecentPrompts:
    """A call's recent typed prompts, seen by polling its settings (no hook into the session needed).

    `observe(prompt)` is called with the call's current prompt before each decode; a prompt that
    changed and was not set by voice (`spoken(text)` records those) counts as typed.
    """

    limit: int = MAX_RECENT
    items: list[str] = field(default_factory=list)
    _last: str = ""
    _spoken: set[str] = field(default_factory=set)

    def spoken(self, text: str) -> None:
        self._spoken.add(" ".join(_words(text)))
        if len(self._spoken) > 64:
            self._spoken = set(list(self._spoken)[-32:])

    def observe(self, prompt: str) -> list[str]:
        prompt = (prompt or "").strip()
        if prompt and prompt != self._last:
            self._last = prompt
            if " ".join(_words(prompt)) not in self._spoken and prompt not in self.items:
                self.items = [*self.items, prompt][-self.limit :]
        return list(self.items)
