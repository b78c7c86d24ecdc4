"""Engine selection (`--engine`): sd-turbo, tiny, passthrough, with a fallback that never blocks start-up."""

from __future__ import annotations

import logging

from speakdraw.engines.base import Engine, EngineOptions, EngineSession, ImagePromptUnavailable
from speakdraw.engines.passthrough import PassthroughEngine

log = logging.getLogger(__name__)

ENGINE_NAMES = ("sd-turbo", "tiny", "passthrough")


class EngineUnavailable(RuntimeError):
    """The engine's weights or packages cannot be had here; the message says why and what to do."""


def load_engine(options: EngineOptions) -> tuple[Engine, list[str]]:
    """Load the requested engine; on EngineUnavailable fall back to passthrough and say why."""
    if options.engine not in ENGINE_NAMES:
        raise ValueError(f"unknown engine {options.engine!r}; choose one of {', '.join(ENGINE_NAMES)}")
    if options.engine == "passthrough":
        return PassthroughEngine(options.simulate_cost_ms), []
    try:
        from speakdraw.diffusion import load_diffusion_engine

        return load_diffusion_engine(options), []
    except EngineUnavailable as exc:
        warning = f"engine {options.engine!r} unavailable, serving passthrough: {exc}"
        log.warning(warning)
        return PassthroughEngine(options.simulate_cost_ms), [warning]


__all__ = [
    "ENGINE_NAMES",
    "Engine",
    "EngineOptions",
    "EngineSession",
    "EngineUnavailable",
    "ImagePromptUnavailable",
    "PassthroughEngine",
    "load_engine",
]
