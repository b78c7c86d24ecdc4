"""The layer rule of DESIGN.md: `speakdraw/` never imports the network stack (aiohttp, aiortc, av)."""

from __future__ import annotations

import ast
from pathlib import Path

SPEAKDRAW = Path(__file__).resolve().parent.parent / "speakdraw"
FORBIDDEN = {"aiohttp", "aiortc", "av", "server"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_speakdraw_never_imports_the_network_stack():
    files = sorted(SPEAKDRAW.rglob("*.py"))
    assert len(files) > 10
    offenders = {str(f.relative_to(SPEAKDRAW)): sorted(imported_roots(f) & FORBIDDEN) for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}


def test_the_checker_sees_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom aiortc.rtp import RtpPacket\ndef f():\n    import av\n")
    assert imported_roots(probe) & FORBIDDEN == {"aiortc", "av"}
