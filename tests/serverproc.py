"""Start the real `speakdraw serve` in a subprocess on a free loopback port, for integration tests and benches."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One server; `base` is its plain-HTTP URL. Defaults keep start-up fast: passthrough, no STT, no matting."""

    def __init__(
        self,
        *extra: str,
        engine: str = "passthrough",
        stt: str = "off",
        matting: str = "off",
        https_port: int = 0,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.https_port = https_port
        self.base = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--https-port",
            str(https_port),
            "--engine",
            engine,
            "--stt",
            stt,
            "--matting",
            matting,
            *extra,
        ]
        self.log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"speakdraw-server-{self.port}.log"
        self._log = open(self.log_path, "wb")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as resp:
                    health = json.loads(resp.read())
                if health.get("engine_ready"):
                    return health
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.log_text()[-4000:]}")

    def health(self) -> dict:
        with urllib.request.urlopen(self.base + "/healthz", timeout=5) as resp:
            return json.loads(resp.read())

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
