"""Where weights live and how they are written: the cache dir, checksums, atomic writes, the entry record.

A download goes to a temp name next to its target and is renamed into place only once it is complete
and its checksum verified, so a failure or an interrupt never leaves a half file where `path()` looks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:  # typing only: sources.py imports this module
    from speakdraw.weights.sources import Source

CHUNK = 1 << 20


class WeightsUnavailable(Exception):
    """No source of a weight worked; the message lists each source tried and why."""

    def __init__(self, name: str, attempts: list[tuple[str, str]], hint: str = ""):
        self.name = name
        self.attempts = attempts
        lines = [f"weights {name!r} are not available; tried:"]
        lines += [f"  - {source}: {reason}" for source, reason in attempts] or ["  (no sources)"]
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


class SourceFailed(Exception):
    """One source could not deliver (the reason ends up in WeightsUnavailable)."""


def home() -> Path:
    """The one cache dir: `$SPEAKDRAW_HOME`, default `~/.cache/speakdraw`."""
    return Path(os.environ.get("SPEAKDRAW_HOME") or Path.home() / ".cache" / "speakdraw").expanduser()


def offline() -> bool:
    """`SPEAKDRAW_OFFLINE=1` (or `HF_HUB_OFFLINE=1`) skips every network source."""
    flags = (os.environ.get(var, "").lower() for var in ("SPEAKDRAW_OFFLINE", "HF_HUB_OFFLINE"))
    return any(flag in ("1", "true", "yes") for flag in flags)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Weight:
    """A registry entry. `filename` set → a single file; otherwise a folder."""

    name: str
    description: str
    licence: str
    sources: tuple[Source, ...]
    filename: str | None = None
    sha256: str | None = None  # single files: checked on every download and on external files
    files: dict[str, str] = field(default_factory=dict)  # folders: relative path → sha256 (optional)
    size_mb: float | None = None

    @property
    def is_file(self) -> bool:
        return self.filename is not None

    @property
    def cache_path(self) -> Path:
        """Where downloads of this entry live in the cache dir."""
        base = home() / self.name
        return base / self.filename if self.filename else base

    def check(self, path: Path) -> str | None:
        """Why `path` is not a valid copy of this entry (None when it is)."""
        if self.is_file:
            if not path.is_file():
                return f"{path} is not a file"
            if self.sha256:
                got = sha256_of(path)
                if got != self.sha256:
                    return f"sha256 mismatch for {path}: expected {self.sha256}, got {got}"
            return None
        if not path.is_dir():
            return f"{path} is not a folder"
        for rel, expected in self.files.items():
            member = path / rel
            if not member.is_file():
                return f"{member} is missing"
            if expected and sha256_of(member) != expected:
                return f"sha256 mismatch for {member}"
        return None


class SilentTqdm(tqdm):
    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def atomic_file(target: Path):
    """Yield a temp path next to `target`; rename it into place only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:  # also on KeyboardInterrupt: never leave a half file behind
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: Path):
    """Like `atomic_file` for a folder (rename of a complete temp folder)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def verify_file(weight: Weight, path: Path) -> None:
    """Refuse a wrong checksum; the caller's atomic block then removes the file."""
    if weight.sha256:
        got = sha256_of(path)
        if got != weight.sha256:
            raise SourceFailed(f"sha256 mismatch: expected {weight.sha256}, got {got}; the file was removed")


def http_download(url: str, dest: Path, timeout_s: float, progress: bool, label: str) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "speakdraw-weights"})
    with urllib.request.urlopen(request, timeout=timeout_s) as resp, open(dest, "wb") as f:
        total = resp.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        done = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=not progress) as bar:
            while True:
                block = resp.read1(CHUNK)  # whatever has arrived: a live progress bar
                if not block:
                    break
                f.write(block)
                done += len(block)
                bar.update(len(block))
    if total is not None and done != total:
        raise SourceFailed(f"download interrupted after {done} of {total} bytes")


def extract(zf: zipfile.ZipFile, member: str, dest: Path, progress: bool) -> None:
    info = zf.getinfo(member)
    with zf.open(info) as src, open(dest, "wb") as out:
        label = f"extract {Path(member).name}"
        with tqdm(total=info.file_size, unit="B", unit_scale=True, desc=label, disable=not progress) as bar:
            for block in iter(lambda: src.read(CHUNK), b""):
                out.write(block)
                bar.update(len(block))


def inside(folder: Path, relative: str) -> Path:
    """`folder / relative`, refused (SourceFailed) when it would land outside `folder` (`..`, absolute)."""
    target = (folder / relative).resolve()
    if not target.is_relative_to(folder.resolve()) or target == folder.resolve():
        raise SourceFailed(f"refused archive member {relative!r}: it would be written outside {folder}")
    return target
