"""The project documents itself (issue 20): nothing points outside the repository, the README's API table
lists every route the app registers, and its code map names every module of `server/`."""

from __future__ import annotations

import re
import subprocess

import pytest

from server.app import create_app
from server.config import ServerConfig
from tests.serverproc import REPO

README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    """The README's `## title` section, its subsections included."""
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [name for name in out.splitlines() if (REPO / name).is_file()]


def test_nothing_points_to_a_file_outside_the_repository():
    outside = re.compile(r"DESIGN\.md|\.\./shared/|/work/shared")
    hits = []
    for name in tracked_files():
        if name == "tests/test_docs.py":
            continue
        try:
            text = (REPO / name).read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if outside.search(line)]
    assert not hits, hits


def registered_routes() -> set[tuple[str, str]]:
    app = create_app(ServerConfig(https_port=0, stt="off", matting="off"), load_models=False)
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if route.method != "HEAD":
            routes.add((route.method, path))
    return routes


@pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")
def test_the_api_table_lists_every_route():
    rows = [line for line in section("HTTP API").splitlines() if line.startswith("| `")]
    routes = registered_routes()
    assert len(routes) >= 20, routes  # the app really was asked
    missing = []
    for method, path in sorted(routes):
        if path == "/static/":
            found = any("/static/" in row for row in rows)
        elif path == "/":
            found = any(row.startswith("| `GET /`") for row in rows)
        else:  # the path in a row that names the method (`POST /x` / `DELETE` shares one row)
            found = any(re.search(rf"`[^`]*{re.escape(path)}[^`]*`", row) and method in row for row in rows)
        if not found:
            missing.append(f"{method} {path}")
    assert not missing, missing


def test_the_code_map_names_every_server_module():
    """By its path (`server/x.py`), or by its file name in the row of its package (`server/pkg/` ... `x.py`)."""
    code_map = section("Code map")
    rows = code_map.splitlines()
    missing = []
    for path in sorted((REPO / "server").rglob("*.py")):
        module = path.relative_to(REPO).as_posix()
        if path.name == "__init__.py" or f"`{module}`" in code_map:
            continue
        package = path.parent.relative_to(REPO).as_posix()
        if not any(f"`{package}/`" in row and f"`{path.name}`" in row for row in rows):
            missing.append(module)
    assert not missing, missing
