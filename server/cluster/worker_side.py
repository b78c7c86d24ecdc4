"""What a `speakdraw serve` does differently when it is a cluster worker (`--worker-id`, given by `speakdraw cluster`).

- Its session ids start with its worker id (server/session.py), so the front door knows which worker owns
  `/api/sessions/{id}/...` without a shared table.
- It can be drained: it refuses new calls (503 `draining`) and says so in `/healthz`, so the front doors stop
  sending it offers, while its calls go on. SIGUSR1 drains, SIGUSR2 takes calls again (the worker's Ray actor
  sends them for `speakdraw cluster drain`); SIGTERM drains and exits once its calls have ended, or after
  `--drain-timeout` (then its calls are closed and their pages rejoin through the front door elsewhere). A second
  SIGTERM, or SIGINT, stops at once.
- It dies with its Ray actor: the actor that started it passes its pid in `SPEAKDRAW_WORKER_PARENT`; when that
  process goes (SIGKILL, a lost node), so does the worker, and Ray's restart of the actor starts a fresh one.

No Ray here: this module runs inside the worker's own `speakdraw serve` process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from server.errors import json_error

if TYPE_CHECKING:
    from aiohttp import web

    from server.state import AppState

log = logging.getLogger(__name__)

PARENT_ENV = "SPEAKDRAW_WORKER_PARENT"
DRAINING_RETRY_AFTER_S = 5
_PR_SET_PDEATHSIG = 1


def draining_refusal(state: AppState) -> web.Response | None:
    """The 503 a draining worker answers every new offer with (None when it takes calls)."""
    if not state.draining:
        return None
    return json_error(
        503,
        "draining",
        "this worker is draining: it takes no new calls",
        headers={"Retry-After": str(DRAINING_RETRY_AFTER_S)},
    )


def health(state: AppState) -> dict[str, Any]:
    """What `/healthz` adds: which worker this is, its pid and whether it is draining."""
    return {"worker": state.config.worker_id or None, "pid": os.getpid(), "draining": state.draining}


def set_draining(state: AppState, draining: bool) -> None:
    if state.draining != draining:
        log.info("worker %s: %s", state.config.worker_id, "draining (no new calls)" if draining else "taking calls")
    state.draining = draining


async def drain_then_stop(state: AppState, stop: asyncio.Event, timeout_s: float, poll_s: float = 0.2) -> None:
    """Take no new calls; set `stop` once the calls have ended, or after `timeout_s` (the app then closes them)."""
    set_draining(state, True)
    deadline = time.monotonic() + timeout_s
    while state.sessions and time.monotonic() < deadline and not stop.is_set():
        await asyncio.sleep(poll_s)
    if state.sessions:
        log.info("worker %s: drain timeout, closing %d calls", state.config.worker_id, len(state.sessions))
    stop.set()


class _PollFilter(logging.Filter):
    """The front doors ask every worker for /healthz twice a second: those lines would drown the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ('"GET /healthz ' in text or '"GET /metrics ' in text)


def install(loop: asyncio.AbstractEventLoop, state: AppState, stop: asyncio.Event) -> str:
    """In `speakdraw serve --worker-id`: SIGTERM drains first, SIGUSR1/SIGUSR2 drain and undrain; die with the actor.

    Returns the worker's start-up line (no token in it: callers never come here but through a front door)."""
    draining: list[asyncio.Task] = []

    def on_term() -> None:
        if draining:  # a second SIGTERM: stop now
            stop.set()
            return
        log.info("worker %s: SIGTERM, draining for up to %.0f s", state.config.worker_id, state.config.drain_timeout_s)
        draining.append(loop.create_task(drain_then_stop(state, stop, state.config.drain_timeout_s)))

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGUSR1, set_draining, state, True)
    loop.add_signal_handler(signal.SIGUSR2, set_draining, state, False)
    logging.getLogger("aiohttp.access").addFilter(_PollFilter())
    die_with_parent()
    config = state.config
    return f"SpeakDraw worker {config.worker_id} up on http://{config.host}:{config.port}/ ({config.engine}, loading)"


def die_with_parent(env: dict[str, str] | None = None) -> None:
    """Exit when the process named by SPEAKDRAW_WORKER_PARENT goes: PR_SET_PDEATHSIG on Linux, else a watch thread."""
    raw = (os.environ if env is None else env).get(PARENT_ENV, "")
    if not raw.isdigit():
        return
    parent = int(raw)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
                if os.getppid() != parent:  # it went before the request took effect
                    os._exit(1)
                return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="speakdraw-parent-watch", daemon=True).start()
