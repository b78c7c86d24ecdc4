"""The front door's view of the workers: who they are, where, whether they live, and how much room each has.

Nothing here is call state. A front door learns the workers from a `Directory` (Ray's named actors:
server/cluster/ray_directory.py) and watches each one on its own: its actor's `info()` (URL, pid, token)
whenever the worker is new or was lost, and `GET /healthz` every `interval_s` (its capacity summary,
sessions, draining). Two front doors on one Ray cluster build the same view.

States: `starting` (known, not answering yet, or its model still loading), `alive`, `draining` (it
says so: no new calls), `dead` (it answered before and no longer does: connection refused or reset at
once, or no answer for `stale_s`). A restarted worker (another pid) goes `dead` → `starting` → `alive`.

Room: the worker's own `capacity.room` when it reports one (how many more calls it admits now), else
derived from its measured `total_fps` against its `min_fps`, capped by `--max-sessions`. Offers this
front door has sent it and whose calls its last `/healthz` does not count yet are taken off
(`inflight`, `recent`), so offers that arrive together cannot overfill a worker.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

log = logging.getLogger(__name__)

STATES = ("starting", "alive", "draining", "dead")


class Directory(Protocol):
    """Where the workers are listed and described (Ray here; a fixed table in unit tests)."""

    async def names(self) -> list[str]: ...

    async def info(self, worker_id: str, timeout_s: float) -> dict[str, Any]: ...


@dataclass
class WorkerView:
    id: str
    info: dict[str, Any] | None = None  # the actor's info(): url, node, pid, token, min_fps, max_sessions
    health: dict[str, Any] | None = None  # its last good /healthz
    health_at: float = -math.inf  # monotonic time its last good /healthz arrived
    state: str = "starting"
    ever_alive: bool = False
    need_info: bool = True
    inflight: int = 0  # offers sent to it, not answered yet
    recent: list[float] = field(default_factory=list)  # offers it answered that its last /healthz may not count
    last_error: str = ""

    @property
    def url(self) -> str | None:
        return None if self.info is None else self.info.get("url")

    @property
    def token(self) -> str | None:
        return None if self.info is None else self.info.get("token")

    def sessions(self) -> int:
        return int((self.health or {}).get("sessions") or 0)

    def capacity(self) -> dict[str, Any]:
        return dict((self.health or {}).get("capacity") or {})

    def room(self) -> int:
        """Calls it would admit now by its last report, less what this front door sent it since."""
        info = self.info or {}
        cap = self.capacity()
        calls = max(self.sessions(), int(cap.get("calls") or 0))
        max_sessions = int(info.get("max_sessions") or 8)
        if isinstance(cap.get("room"), int | float):
            room = int(cap["room"])
        else:
            total = cap.get("total_fps")
            guard = float(cap.get("guard") or 1.0)
            if total is not None and calls == 0 and 0 < guard < 1:
                # an idle worker's latency guard is as its last calls left it (no frames since to ease it back)
                total = float(total) / guard
            min_fps = float(cap.get("min_fps") or info.get("min_fps") or 8.0)
            room = max_sessions - calls if total is None else math.floor(float(total) / max(min_fps, 0.1)) - calls
        room = min(room, max_sessions - calls)
        return room - self.inflight - len(self.recent)

    def takes_offers(self, now: float, stale_s: float, loading: bool = False) -> bool:
        """Alive and answering; with `loading`, also a worker whose model is still loading (it answers /healthz
        and, like any `speakdraw serve`, gives a call passthrough frames until the model is ready)."""
        states = ("alive", "starting") if loading else ("alive",)
        return self.state in states and now - self.health_at <= stale_s and self.url is not None

    def view(self) -> dict[str, Any]:
        """One entry of the front door's /healthz `workers`."""
        info, health = self.info or {}, self.health or {}
        return {
            "id": self.id,
            "node": info.get("node"),
            "pid": health.get("pid") if self.state != "dead" else info.get("pid"),
            "actor_pid": info.get("actor_pid"),  # its Ray actor, the server's parent
            "state": self.state,
            "sessions": self.sessions() if self.state != "dead" else 0,
            "capacity": self.capacity() if self.state != "dead" else {},
            "room": max(0, self.room()) if self.state == "alive" else 0,
            "url": self.url,
            "engine": health.get("engine"),
            "error": self.last_error or None,
        }


class Fleet:
    """Watches every worker the directory lists; `reserve()` picks one for an offer (no await in between)."""

    def __init__(
        self,
        directory: Directory,
        interval_s: float = 0.5,
        health_timeout_s: float = 2.0,
        stale_s: float = 2.0,
        discover_s: float = 2.0,
        on_change: Callable[[WorkerView, str], None] | None = None,
    ) -> None:
        self.directory = directory
        self.interval_s, self.health_timeout_s, self.stale_s, self.discover_s = (
            interval_s,
            health_timeout_s,
            stale_s,
            discover_s,
        )
        self.workers: dict[str, WorkerView] = {}
        self.on_change = on_change
        self._tasks: dict[str, asyncio.Task] = {}
        self._discovery: asyncio.Task | None = None
        self.http: aiohttp.ClientSession | None = None
        self.discovered = asyncio.Event()

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self._discovery = asyncio.create_task(self._discover_forever())

    async def stop(self) -> None:
        tasks = [t for t in [self._discovery, *self._tasks.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _discover_forever(self) -> None:
        while True:
            try:
                names = await self.directory.names()
            except Exception as exc:  # Ray busy or reconnecting: keep the view we have
                log.warning("listing workers failed: %r", exc)
            else:
                for name in names:
                    if name not in self.workers:
                        self.workers[name] = WorkerView(name)
                        self._tasks[name] = asyncio.create_task(self._watch(self.workers[name]))
                for name in [n for n in self.workers if n not in names]:  # removed (`speakdraw cluster down`)
                    self._tasks.pop(name).cancel()
                    del self.workers[name]
                self.discovered.set()
            await asyncio.sleep(self.discover_s)

    # ---- one worker ------------------------------------------------------------------------
    async def _watch(self, view: WorkerView) -> None:
        while True:
            started = time.monotonic()
            if view.need_info:
                await self._refresh_info(view)
            if view.url is not None:
                await self._check(view)
            await asyncio.sleep(max(0.05, self.interval_s - (time.monotonic() - started)))

    async def _refresh_info(self, view: WorkerView) -> None:
        try:
            info = await self.directory.info(view.id, timeout_s=max(2.0, 4 * self.interval_s))
        except Exception as exc:  # restarting, or gone: the next round asks again
            view.last_error = f"info: {type(exc).__name__}"
            self._stale(view, time.monotonic())
            return
        view.info = info
        view.need_info = False

    async def _check(self, view: WorkerView) -> None:
        assert self.http is not None
        asked = time.monotonic()
        try:
            async with self.http.get(
                f"{view.url}/healthz", timeout=aiohttp.ClientTimeout(total=self.health_timeout_s)
            ) as resp:
                if resp.status != 200:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                health = await resp.json()
        except (TimeoutError, aiohttp.ServerTimeoutError):  # slow (a loaded machine): lost only once stale
            view.last_error = "healthz: timeout"
            self._stale(view, time.monotonic())
            return
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:  # refused or reset: it is gone
            view.last_error = f"healthz: {type(exc).__name__}"
            self.lost(view)
            return
        except (aiohttp.ClientError, ValueError) as exc:
            view.last_error = f"healthz: {type(exc).__name__}"
            self._stale(view, time.monotonic())
            return
        info = view.info or {}
        if health.get("worker") not in (None, view.id) or (info.get("pid") and health.get("pid") != info["pid"]):
            view.need_info = True  # another process answers at that address (a restart): ask the actor again
            if health.get("worker") not in (None, view.id):
                self.lost(view)
                return
        # fresh as of its arrival (a slow answer from a busy machine is still a sign of life); the calls it
        # counts are those answered before it was asked
        view.health, view.health_at, view.last_error = health, time.monotonic(), ""
        view.recent = [t for t in view.recent if t > asked]  # calls answered before this /healthz are counted
        if health.get("draining"):
            self._set(view, "draining")
        elif health.get("engine_ready"):
            self._set(view, "alive")
        else:
            self._set(view, "starting")

    def _stale(self, view: WorkerView, now: float) -> None:
        if view.state in ("alive", "draining") and now - view.health_at > self.stale_s:
            self.lost(view)

    def lost(self, view: WorkerView) -> None:
        """It stopped answering (or an offer could not reach it): no offers until it answers again."""
        view.need_info = True
        view.recent.clear()
        self._set(view, "dead" if view.ever_alive else "starting")

    def _set(self, view: WorkerView, state: str) -> None:
        if state == "alive":
            view.ever_alive = True
        if view.state != state:
            old, view.state = view.state, state
            log.info("worker %s: %s -> %s", view.id, old, state)
            if self.on_change is not None:
                self.on_change(view, old)

    # ---- dispatch --------------------------------------------------------------------------
    def reserve(self, exclude: set[str] = frozenset(), prefer: str | None = None) -> WorkerView | None:
        """The live worker with the most room (`prefer` first when it takes offers), its slot taken. No await."""
        now = time.monotonic()
        live = [v for v in self.workers.values() if v.id not in exclude and v.takes_offers(now, self.stale_s)]
        chosen = next((v for v in live if v.id == prefer), None)
        if chosen is None:
            roomy = [v for v in live if v.room() > 0]
            if not roomy:  # none ready with room: one whose model is still loading, as `serve` itself would
                loading = [v for v in self.workers.values() if v.id not in exclude and v.state == "starting"]
                roomy = [v for v in loading if v.takes_offers(now, self.stale_s, loading=True) and v.room() > 0]
            if not roomy:
                return None
            chosen = max(roomy, key=lambda v: (v.room(), -v.sessions() - v.inflight, v.id))
        chosen.inflight += 1
        return chosen

    def release(self, view: WorkerView, admitted: bool) -> None:
        view.inflight -= 1
        if admitted:
            view.recent.append(time.monotonic())

    def any_live(self) -> WorkerView | None:
        """For routes any worker can answer (settings, ICE servers, transcription): the roomiest live one."""
        now = time.monotonic()
        live = [v for v in self.workers.values() if v.takes_offers(now, self.stale_s)]
        if not live:
            live = [v for v in self.workers.values() if v.state == "draining" and v.url]
        return max(live, key=lambda v: (v.room(), v.id), default=None)

    def owner(self, session_id: str) -> WorkerView | None:
        """The worker a session id names ("<worker>-<hex>"), if this front door knows it."""
        worker_id, sep, _ = session_id.partition("-")
        return self.workers.get(worker_id) if sep else None

    def views(self) -> list[dict[str, Any]]:
        return [self.workers[k].view() for k in sorted(self.workers)]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for view in self.workers.values():
            counts[view.state] += 1
        return counts


async def wait_for(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> bool:
    """Poll `predicate` until it holds or `timeout_s` passes (tests, start-up)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll_s)
    return True
