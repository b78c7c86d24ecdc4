"""One cluster worker: a Ray actor that runs a whole `speakdraw serve --worker-id ID` on its node, as its child.

Why a child process and not the server inside the actor: the worker is then exactly the `speakdraw serve`
of one machine (its own main thread, signal handlers, event loop, CPU clock for the capacity model, and
its own GIL, which Ray's threads do not share), and its death is plain to see:
- the server process dies (SIGKILL, a crash): the actor's watch thread sees it exit and ends the actor
  process, so Ray restarts the actor (`max_restarts`), which starts a fresh server on a new port;
- the actor process dies (SIGKILL, a lost node): the server follows it (server/cluster/worker_side.py,
  PR_SET_PDEATHSIG), and Ray restarts the actor, on another node if this one is gone;
- the server drains and exits (SIGTERM): the same restart, i.e. a rolling restart of that worker.

The server listens on the node's address with an explicit token only the front doors get (through
`info()`, over Ray); with `--ray-address local`, on loopback with no token unless `--token` was given (as a
plain `speakdraw serve`). The browser never talks HTTP to a worker, only media (its ICE candidates).
This module imports no Ray at module level: the actor class is made with `ray.remote(WorkerProcess)`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from server.cluster.worker_side import PARENT_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def worker_command(worker_id: str, host: str, port: int, token: str | None, serve_argv: list[str]) -> list[str]:
    """The child's command line: every media flag the front door was given, its own listener and id."""
    return [
        sys.executable,
        "-m",
        "server.cli",
        "serve",
        *serve_argv,
        "--worker-id",
        worker_id,
        "--host",
        host,
        "--port",
        str(port),
        "--https-port",
        "0",
        *(["--token", token] if token else []),
    ]


class WorkerProcess:
    """The actor's body (see the module docstring). Its methods run on the actor's main thread."""

    def __init__(self, worker_id: str, serve_argv: list[str], token: str | None, settings: dict[str, Any]) -> None:
        import ray

        context = ray.get_runtime_context()
        self.worker_id = worker_id
        self.serve_argv = list(serve_argv)
        self.token = token
        self.settings = dict(settings)  # min_fps, max_sessions (the front doors' room before a measure), host
        self.node = ray.util.get_node_ip_address()
        self.host = self.settings.get("host") or self.node  # 127.0.0.1 with --ray-address local
        self.node_id = context.get_node_id()
        with warnings.catch_warnings():  # deprecated in Ray 2.5x, with no replacement yet
            warnings.simplefilter("ignore")
            self.restarted = bool(context.was_current_actor_reconstructed)
        self.started_at = time.time()
        self.port = free_port(self.host)
        self.proc: subprocess.Popen | None = None
        self._stopping = False
        spawned = threading.Event()
        # The thread that starts the child lives as long as this process: PR_SET_PDEATHSIG fires when the
        # *thread* that forked the child ends, so the child must not be forked by a short-lived one.
        threading.Thread(target=self._run, args=(spawned,), name="speakdraw-worker-watch", daemon=True).start()
        if not spawned.wait(START_TIMEOUT_S) or self.proc is None:
            raise RuntimeError(f"worker {worker_id}: could not start speakdraw serve")

    def _run(self, spawned: threading.Event) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}
        if (REPO_ROOT / "server" / "cli.py").exists():  # a source checkout: the child runs this very code
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        command = worker_command(self.worker_id, self.host, self.port, self.token, self.serve_argv)
        try:
            self.proc = subprocess.Popen(command, cwd=REPO_ROOT if REPO_ROOT.exists() else None, env=env)
        finally:
            spawned.set()
        code = self.proc.wait()
        if not self._stopping:
            print(f"speakdraw worker {self.worker_id}: server exited with {code}; the actor ends so Ray restarts it")
            sys.stdout.flush()
            os._exit(1)

    def info(self) -> dict[str, Any]:
        assert self.proc is not None
        return {
            "id": self.worker_id,
            "node": self.node,
            "node_id": self.node_id,
            "url": f"http://{self.host}:{self.port}",
            "pid": self.proc.pid,
            "actor_pid": os.getpid(),
            "token": self.token,
            "argv": self.serve_argv,
            "restarted": self.restarted,
            "started_at": self.started_at,
            **self.settings,
        }

    def drain(self, on: bool = True) -> bool:
        """Stop (or resume) taking new calls; its calls go on. False when the server is not running."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)
        return True

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """End the server for good (before the actor is killed with no restart): SIGINT stops it at once."""
        self._stopping = True
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
