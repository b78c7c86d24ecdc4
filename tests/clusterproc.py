"""Start the real `speakdraw cluster` (front door + Ray workers) in a subprocess, and leave no Ray process behind.

Kept small and quick for this machine: 2 workers, 1 CPU each, no dashboard, usage stats off, the front door
and the workers' HTTP on 127.0.0.1 (Ray's own gRPC ports bind every interface, protected by Ray's token).
Each cluster runs in a session of its own (`start_new_session`): `stop()` ends the front door (which ends its
Ray), then kills whatever of that session is left, by pid, and checks that nothing is.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.serverproc import REPO, free_port


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != sid:
                continue
            with open(f"/proc/{entry}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except (OSError, IndexError):
            continue
        pids.append(int(entry))
    return pids


def ray_processes(marker: str) -> list[str]:
    """`ps` lines of raylet / gcs_server processes whose command line names `marker` (a Ray temp dir)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if marker in line and ("raylet" in line or "gcs_server" in line)]


class ClusterProcess:
    """`speakdraw cluster`; `base` is the front door's URL. `ray_address=None`: its own local Ray."""

    def __init__(
        self,
        *extra: str,
        workers: int = 2,
        ray_address: str | None = None,
        engine: str = "passthrough",
        log_path: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.temp_dir = None if ray_address else tempfile.mkdtemp(prefix="sdray", dir="/tmp")  # short: socket paths
        args = [
            sys.executable, "-m", "server.cli", "cluster",
            "--ray-address", ray_address or "local",
            "--workers", str(workers), "--cpus-per-worker", "1",
            "--host", "127.0.0.1", "--port", str(self.port), "--https-port", "0",
            "--engine", engine, "--stt", "off", "--matting", "off",
            *extra,
        ]  # fmt: skip
        if self.temp_dir:
            args += ["--ray-temp-dir", self.temp_dir]
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"speakdraw-cluster-{self.port}.log"
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
        self.proc = subprocess.Popen(
            args, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.sid = self.proc.pid  # the session leader's pid is the session id

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self, timeout: float = 5.0) -> dict:
        with urllib.request.urlopen(self.base + "/healthz", timeout=timeout) as resp:
            return json.loads(resp.read())

    def worker(self, worker_id: str) -> dict:
        return next(w for w in self.health()["workers"] if w["id"] == worker_id)

    def wait_ready(self, timeout: float = 180.0, alive: int | None = None) -> dict:
        """Until `alive` workers (default: all) are alive."""
        want = self.workers if alive is None else alive
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cluster exited with {self.proc.returncode}:\n{self.log_text()[-6000:]}")
            try:
                health = self.health(timeout=3)
                if sum(w["state"] == "alive" for w in health["workers"]) >= want:
                    return health
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"cluster not ready in {timeout}s:\n{self.log_text()[-6000:]}")

    def wait_state(self, worker_id: str, states: set[str], timeout: float) -> tuple[str, float]:
        """Poll /healthz until `worker_id` is in one of `states`; (state, seconds waited)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                state = self.worker(worker_id)["state"]
                if state in states:
                    return state, time.monotonic() - start
            except (urllib.error.URLError, ConnectionError, TimeoutError, StopIteration):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"worker {worker_id} not {states} in {timeout}s: {self.health()['workers']}")

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Another `speakdraw cluster ...` command against this cluster's Ray (e.g. `drain w0`)."""
        address = self.health()["ray"]["address"]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        return subprocess.run(
            [sys.executable, "-m", "server.cli", "cluster", *args, "--ray-address", address],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )

    def stop(self, timeout: float = 30.0) -> list[int]:
        """SIGTERM the front door (its Ray goes with it), then SIGKILL what of its session is left; returns those."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 15.0
        while session_pids(self.sid) and time.monotonic() < deadline:
            time.sleep(0.3)  # Ray's agents leave a moment after the raylet
        left = session_pids(self.sid)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left
