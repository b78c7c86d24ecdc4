"""Finding and fetching a registry entry: local copies first (no network), then each remote source."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from speakdraw.weights.registry import REGISTRY
from speakdraw.weights.sources import EnvPath, HubRepo
from speakdraw.weights.store import SourceFailed, Weight, WeightsUnavailable


def _entry(name: str | Weight) -> Weight:
    if isinstance(name, Weight):
        return name
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def _cached(weight: Weight) -> Path | None:
    """Our cache dir's copy. Files there were verified before the rename that put them there."""
    target = weight.cache_path
    if weight.is_file:
        return target if target.is_file() else None
    return target if target.is_dir() and weight.check(target) is None else None


def _find_local(weight: Weight, attempts: list[tuple[str, str]] | None = None) -> Path | None:
    """Env/local/package paths, our cache, the HF cache — no network."""
    local = [s for s in weight.sources if not s.remote]
    hub = [s for s in weight.sources if s.remote]
    for source in local:
        try:
            found = source.locate(weight)
        except SourceFailed as exc:
            if attempts is not None:
                attempts.append((source.describe(), str(exc)))
            continue
        if found is not None:
            return found
    cached = _cached(weight)
    if cached is not None:
        return cached
    if attempts is not None:
        attempts.append((f"cache {weight.cache_path}", "not present"))
    for source in hub:
        try:
            found = source.locate(weight)
        except SourceFailed as exc:
            if attempts is not None and isinstance(source, HubRepo):
                attempts.append((f"{source.describe()} (cache)", str(exc)))
            continue
        if found is not None:
            return found
    return None


def path(name: str | Weight) -> Path | None:
    """The local copy of a weight if there is one; never downloads."""
    return _find_local(_entry(name))


def fetch(name: str | Weight, *, progress: bool = True) -> Path:
    """The local file or folder of a weight, downloading it (once) if needed.

    Raises WeightsUnavailable listing every source tried when none works.
    """
    weight = _entry(name)
    attempts: list[tuple[str, str]] = []
    found = _find_local(weight, attempts)
    if found is not None:
        return found
    for source in weight.sources:
        if not source.remote:
            continue
        try:
            return source.download(weight, progress)
        except SourceFailed as exc:
            attempts.append((source.describe(), str(exc)))
    hint = f"Put the weights in place with `speakdraw models pull {weight.name}` on a machine with network access"
    env = next((s.var for s in weight.sources if isinstance(s, EnvPath)), None)
    hint += f", or point {env} at a local copy." if env else "."
    raise WeightsUnavailable(weight.name, attempts, hint)


def status(name: str | Weight) -> str:
    """'cached', 'local' (found outside our cache), or 'missing' — for `models list`."""
    weight = _entry(name)
    found = path(weight)
    if found is None:
        return "missing"
    return "cached" if found == _cached(weight) else "local"


def match(pattern: str) -> list[str]:
    """Registry names matching a glob (the CLI's `pull 'faster-whisper-*'`)."""
    return [name for name in REGISTRY if fnmatch.fnmatch(name, pattern)]
