"""Engine selection (`--engine`): a table of names to lazy loaders, with a fallback that never blocks start-up.

A new engine joins `ENGINES` with one line: its name and a function that imports and
loads it (so `passthrough` never pays for importing torch/diffusers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from speakdraw.engines.base import Engine, EngineOptions, EngineSession, EngineUnavailable, ImagePromptUnavailable
from speakdraw.engines.passthrough import PassthroughEngine

log = logging.getLogger(__name__)


def _diffusion(options: EngineOptions) -> Engine:
    from speakdraw.diffusion.engine_factory import load_diffusion_engine

    return load_diffusion_engine(options)


def _style(options: EngineOptions) -> Engine:
    from speakdraw.engines.style.engine import load_style_engine

    return load_style_engine(options)


def _passthrough(options: EngineOptions) -> Engine:
    return PassthroughEngine(options.simulate_cost_ms)


ENGINES: dict[str, Callable[[EngineOptions], Engine]] = {
    "sd-turbo": _diffusion,
    "sdxl-turbo": _diffusion,  # the SDXL family in the same diffusion engine (issue 13)
    "tiny": _diffusion,
    "style": _style,
    "passthrough": _passthrough,
}
ENGINE_NAMES = tuple(ENGINES)
FALLBACKS = ("style", "passthrough")  # tried in order when the requested engine cannot be had


def load_engine(options: EngineOptions) -> tuple[Engine, list[str]]:
    """Load the requested engine; on EngineUnavailable fall back (`FALLBACKS`, in order) and say why."""
    loader = ENGINES.get(options.engine)
    if loader is None:
        raise ValueError(f"unknown engine {options.engine!r}; choose one of {', '.join(ENGINES)}")
    try:
        return loader(options), []
    except EngineUnavailable as exc:
        reason = exc
    warnings: list[str] = []
    for name in FALLBACKS:
        if name == options.engine:
            continue
        try:
            engine = ENGINES[name](options)
        except EngineUnavailable as exc:
            warnings.append(f"fallback engine {name!r} unavailable too: {exc}")
            continue
        warning = f"engine {options.engine!r} unavailable, serving {name}: {reason}"
        log.warning(warning)
        return engine, [warning, *warnings]
    raise EngineUnavailable(f"no engine can run: {reason}; {'; '.join(warnings)}")


__all__ = [
    "ENGINES",
    "ENGINE_NAMES",
    "FALLBACKS",
    "Engine",
    "EngineOptions",
    "EngineSession",
    "EngineUnavailable",
    "ImagePromptUnavailable",
    "PassthroughEngine",
    "load_engine",
]
