from __future__ import annotations

from pathlib import Path

import pytest

from tests.serverproc import ServerProcess

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def start_server(tmp_path):
    """Factory: `start_server(*flags, engine=..., stt=..., matting=..., https_port=...)` → a ready ServerProcess."""
    started: list[ServerProcess] = []

    def start(*extra: str, **kwargs) -> ServerProcess:
        server = ServerProcess(*extra, log_path=tmp_path / f"server-{len(started)}.log", **kwargs)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
