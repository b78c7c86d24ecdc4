"""Under CI=true a skip is a failure, also when a whole module skips at import (issue 14, row 16)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

MODULES = {
    "test_module_skip.py": """
        import pytest
        pytest.skip("chromium missing", allow_module_level=True)

        def test_never():
            pass
    """,
    "test_importorskip.py": """
        import pytest
        pytest.importorskip("speakdraw_no_such_module")

        def test_never():
            pass
    """,
    "test_per_test_skip.py": """
        import pytest

        def test_skips():
            pytest.skip("no weights")
    """,
}


def _run(folder: Path, name: str, ci: str) -> subprocess.CompletedProcess:
    """pytest on one tiny module with this repo's conftest loaded as a plugin."""
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider", str(folder / name)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_skip_fails_under_ci_and_only_there(tmp_path, name):
    (tmp_path / name).write_text(textwrap.dedent(MODULES[name]))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # keep the repo's ini (and its testpaths) out of it
    ci = _run(tmp_path, name, "true")
    assert ci.returncode != 0, ci.stdout
    assert "in CI" in ci.stdout, ci.stdout
    local = _run(tmp_path, name, "")
    assert local.returncode in (0, 5), local.stdout  # 5: nothing collected (the module skipped)
    assert "skipped" in local.stdout, local.stdout
