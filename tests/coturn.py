"""A coturn TURN server on loopback for the relay tests: generated secret, free port, stopped after.

`tests/setup.sh` installs Debian's `coturn`. Started with the TURN REST scheme (`use-auth-secret`),
the same way contrib/coturn/turnserver.conf runs it, but on 127.0.0.1 only and with loopback peers
allowed (production keeps them denied).
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

TURNSERVER = "turnserver"


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port")


class Coturn:
    def __init__(self, log_dir: Path, port: int | None = None, secret: str | None = None) -> None:
        if shutil.which(TURNSERVER) is None:
            pytest.skip("coturn is not installed (tests/setup.sh installs it)")
        self.port = port or free_udp_tcp_port()
        self.secret = secret or secrets.token_hex(16)
        self.realm = "speakdraw.test"
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.url = f"turn:127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Coturn:
        args = [
            TURNSERVER,
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={self.port}",
            "--use-auth-secret",
            f"--static-auth-secret={self.secret}",
            f"--realm={self.realm}",
            "--allow-loopback-peers",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--simple-log",
            f"--log-file={self.log_dir / f'coturn-{self.port}.log'}",
            f"--pidfile={self.log_dir / f'coturn-{self.port}.pid'}",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # ready when its TCP listener accepts
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited with {self.proc.returncode}")
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError("turnserver did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # a killed relay: what a dropped network looks like to the peers
            self.proc.wait(10)
        self.proc = None
