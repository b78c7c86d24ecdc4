"""The house plan, checked from the source: no import cycle inside `speakdraw/` and `server/`, and nothing in
`speakdraw/` pointing up (at `server`) or at the network stack (aiohttp, aiortc, av).

Every import counts — module level or inside a function, absolute or relative, and
`importlib.import_module("...")` with a literal name — except those under `if TYPE_CHECKING:`,
which never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("speakdraw", "server")
FORBIDDEN_IN_SPEAKDRAW = {"aiohttp", "aiortc", "av", "server"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _walk_runtime(tree: ast.AST):
    """ast.walk, skipping the bodies of `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def imports_of(path: Path, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules `module` imports at run time (names as written; `from pkg import sub` gives `pkg.sub`
    when `pkg.sub` is a known module, else `pkg`)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _walk_runtime(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    files = {module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        raw = imports_of(path, module, path.name == "__init__.py", known)
        graph[module] = raw
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (or a module importing itself), sorted."""
    internal = {m: {t for t in targets if t in graph} for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in internal[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in internal[v]:
                found.append(sorted(group))

    for v in sorted(internal):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycles_in_speakdraw_and_server():
    graph = import_graph()
    assert len(graph) > 40
    assert cycles(graph) == []


def test_speakdraw_imports_neither_server_nor_the_network_stack():
    graph = import_graph()
    offenders = {
        m: sorted(t for t in targets if t.split(".")[0] in FORBIDDEN_IN_SPEAKDRAW)
        for m, targets in graph.items()
        if m.split(".")[0] == "speakdraw"
    }
    assert {m: bad for m, bad in offenders.items() if bad} == {}


def test_the_checker_finds_cycles_and_every_kind_of_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")  # function level
    (pkg / "b.py").write_text("from .sub import c\n")  # relative
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("import importlib\nimportlib.import_module('pkg.a')\nimport av\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.b"] == {"pkg.sub.c"}
    assert "av" in graph["pkg.sub.c"]
    assert "pkg.a" not in graph["pkg.d"]  # typing-only imports never run
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
