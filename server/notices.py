"""The server's warnings as a person reads them: one plain sentence each, the technical text kept as the detail.

The warnings themselves (`server.warnings` in /api/settings, the log) stay as they are, in server terms
(`--engine tiny/passthrough`, env vars): an operator needs them. The call page shows `summary` and offers
`detail` on a tap. A warning this module does not know still gets a notice: a generic sentence, its detail.
"""

from __future__ import annotations

import re
from typing import TypedDict


class Notice(TypedDict):
    summary: str
    detail: str


# What each engine is, in words (the --engine names are the server's terms).
ENGINE_WORDS = {
    "style": "the offline style painter",
    "passthrough": "without a painter (your camera picture comes back unchanged)",
    "sd-turbo": "the diffusion model",
    "sdxl-turbo": "the SDXL diffusion model",
    "tiny": "the small diffusion model",
}

_UNAVAILABLE = re.compile(r"engine '(?P<asked>[^']+)' unavailable, serving (?P<serving>[\w-]+): (?P<why>.*)", re.S)
_FAILED = re.compile(r"engine '(?P<asked>[^']+)' failed to load \((?P<why>.*)\); serving (?P<serving>[\w-]+)", re.S)
_FALLBACK_TOO = re.compile(r"fallback engine '(?P<name>[^']+)' unavailable too: (?P<why>.*)", re.S)


def _engine(name: str) -> str:
    return ENGINE_WORDS.get(name, f"the {name} engine")


def _why(asked: str, reason: str) -> str:
    """Why an engine could not be had, in a few words."""
    text = reason.lower()
    subject = _engine(asked).removeprefix("the ")
    if "not available locally" in text or "not in the hugging face cache" in text or "could not download" in text:
        return f"the {subject} isn't downloaded"
    if "weights missing" in text:
        return "its model files are missing"
    if "no cuda gpu" in text:
        return f"the {subject} needs a graphics card this machine doesn't have"
    if "not installed" in text:
        return f"a package the {subject} needs isn't installed"
    return f"the {subject} couldn't be loaded"


def summarize(warning: str) -> str:
    """One plain sentence for one server warning."""
    for pattern in (_UNAVAILABLE, _FAILED):
        match = pattern.match(warning)
        if match:
            serving = _engine(match["serving"])
            running = serving if serving.startswith("without") else f"the {serving.removeprefix('the ')}"
            return f"Running {running}: {_why(match['asked'], match['why'])}"
    match = _FALLBACK_TOO.match(warning)
    if match:
        name = _engine(match["name"])
        return f"{name[0].upper()}{name[1:]} can't run here either: {_why(match['name'], match['why'])}"
    if warning.startswith("matting unavailable"):
        return "Background separation is off: 'human' mode paints the whole picture"
    if warning.startswith("speech-to-text unavailable"):
        return "Speech recognition is off: type your prompt instead of saying it"
    if warning.startswith("warm-up of"):
        return "The first painted frames may be slow: the painter's warm-up failed"
    return "The server reported a problem"


def notices(warnings: list[str]) -> list[Notice]:
    """`warnings` as notices, in order; the same warning twice gives one notice."""
    seen: dict[str, Notice] = {}
    for warning in warnings:
        seen.setdefault(warning, Notice(summary=summarize(warning), detail=warning))
    return list(seen.values())
