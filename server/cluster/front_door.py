"""The front door: one URL in front of the workers, with the page and routes of `speakdraw serve`.

- `POST /api/offer` and `POST /whip` go to the live worker with the most room (server/cluster/fleet.py):
  the slot is reserved before any await; a worker's 503 (full, draining, shutting down, no media ports)
  or a worker that cannot be reached sends the offer on to the next; `503 server_full` with `Retry-After`
  only when none takes it. A `resume` offer goes to the worker that owns that session first, if it is
  alive: it may still have the call; elsewhere the offer's own settings start it.
- `/api/sessions/{id}/...` (MJPEG streamed unbuffered, snapshots, image prompts, `DELETE`), `/whip/{id}`
  and `/whep/{id}/...` go to the worker that `{id}` names (`<worker>-<hex>`): no shared table.
- `/api/settings`, `/api/ice`, `/api/transcribe` go to any live worker (they all run the same flags).
- `/healthz` lists the workers; `/metrics` carries every worker's series with a `worker` label.
Media never passes here: the answer carries the worker's own ICE candidates (or the shared TURN server's).
The token rules are those of `speakdraw serve` (server/auth.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from server.auth import access_refusal
from server.cluster import proxy
from server.cluster.fleet import Fleet, WorkerView
from server.cluster.fleet_metrics import FrontDoorMetrics
from server.config import WEB_DIR, is_loopback
from server.errors import json_error, json_errors_middleware

log = logging.getLogger(__name__)

# A worker that answers one of these tells the front door to try the next one.
REFUSAL_CODES = {"server_full", "too_many_sessions", "draining", "shutting_down", "no_media_ports"}
MAX_OFFER_BYTES = 256 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024  # image prompts and audio files pass through
PROTECTED_PREFIXES = ("/api/", "/whip", "/whep")


@dataclass
class FrontDoorConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    https_host: str = "0.0.0.0"
    https_port: int = 0
    token: str | None = None
    token_explicit: bool = False
    ray: dict[str, Any] = field(default_factory=dict)  # shown in /healthz: address, namespace

    def listener_hosts(self) -> dict[int, str]:
        return {self.port: self.host, self.https_port: self.https_host}


FLEET = web.AppKey("fleet", Fleet)
HTTP = web.AppKey("http", aiohttp.ClientSession)
CONFIG = web.AppKey("front_door_config", FrontDoorConfig)
METRICS = web.AppKey("front_door_metrics", FrontDoorMetrics)


@web.middleware
async def token_middleware(request: web.Request, handler) -> web.StreamResponse:
    """As `speakdraw serve`'s (server/auth.py): a token on every listener beyond loopback (everywhere when
    given), and proxies need it."""
    if request.path.startswith(PROTECTED_PREFIXES):
        config = request.app[CONFIG]
        refused = access_refusal(
            request,
            config.token,
            lambda host: config.token_explicit or not is_loopback(host),
            config.listener_hosts(),
            config.https_host,
        )
        if refused is not None:
            return refused
    return await handler(request)


def _no_room(fleet: Fleet, retry_after: int | None, tried: list[str]) -> web.Response:
    views = [fleet.workers[k] for k in sorted(fleet.workers)]
    detail = ", ".join(f"{v.id} {v.state}" + (f" room {max(0, v.room())}" if v.state == "alive" else "") for v in views)
    message = f"no worker has room for another call ({detail or 'no workers yet'}"
    message += f"; tried {', '.join(tried)})" if tried else ")"
    return json_error(503, "server_full", message, headers={"Retry-After": str(retry_after or 2)})


async def _refusal_code(upstream: aiohttp.ClientResponse, body: bytes) -> str | None:
    if upstream.status != 503:
        return None
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "unknown"
    return code if code in REFUSAL_CODES else None


async def dispatch(request: web.Request, body: bytes, prefer: str | None) -> web.StreamResponse:
    """Send an offer (page or WHIP) to the roomiest live worker, then the next, until one answers it."""
    fleet, http, metrics = request.app[FLEET], request.app[HTTP], request.app[METRICS]
    started = time.perf_counter()
    tried: list[str] = []
    retry_after: int | None = None
    while True:
        view = fleet.reserve(exclude=set(tried), prefer=prefer)  # the slot is taken before any await
        if view is None:
            metrics.full.inc()
            return _no_room(fleet, retry_after, tried)
        tried.append(view.id)
        admitted = False
        try:
            try:
                upstream = await proxy.send(http, request, view.url or "", view.token, body=body)
            except proxy.WorkerUnreachable:
                metrics.offers.labels(worker=view.id, outcome="unreachable").inc()
                fleet.lost(view)
                continue
            async with upstream:
                payload = await upstream.read()
            code = await _refusal_code(upstream, payload)
            if code is not None:
                metrics.offers.labels(worker=view.id, outcome="refused").inc()
                if upstream.headers.get("Retry-After", "").isdigit():
                    wait = int(upstream.headers["Retry-After"])
                    retry_after = wait if retry_after is None else min(retry_after, wait)
                continue
            admitted = upstream.status in (200, 201)
            metrics.offers.labels(worker=view.id, outcome="answered" if admitted else "error").inc()
        finally:
            fleet.release(view, admitted)
        metrics.offer_seconds.observe(time.perf_counter() - started)
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in proxy.HOP_BY_HOP}
        return web.Response(status=upstream.status, body=payload, headers=headers)


async def offer(request: web.Request) -> web.StreamResponse:
    if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
        return json_error(413, "too_large", f"an offer is at most {MAX_OFFER_BYTES} bytes")
    body = await request.content.read(MAX_OFFER_BYTES + 1)
    if len(body) > MAX_OFFER_BYTES:
        return json_error(413, "too_large", f"an offer is at most {MAX_OFFER_BYTES} bytes")
    prefer = None
    try:  # only to find the owner of a `resume`; the worker validates the offer itself
        resume = json.loads(body).get("resume")
        if isinstance(resume, str):
            owner = request.app[FLEET].owner(resume)
            prefer = owner.id if owner is not None else None
    except (ValueError, AttributeError, RecursionError):
        pass
    return await dispatch(request, body, prefer)


async def whip_post(request: web.Request) -> web.StreamResponse:
    body = await request.content.read(MAX_OFFER_BYTES + 1)
    if len(body) > MAX_OFFER_BYTES:
        return json_error(413, "too_large", f"an offer is at most {MAX_OFFER_BYTES} bytes")
    return await dispatch(request, body, None)


def _owner_or_404(request: web.Request, session_id: str) -> WorkerView | web.Response:
    view = request.app[FLEET].owner(session_id)
    if view is None or view.url is None:
        return json_error(404, "unknown_session", "no such session (no worker of this cluster owns that id)")
    if view.state == "dead":
        return json_error(404, "unknown_session", f"no such session: its worker {view.id} is down")
    return view


async def to_owner(request: web.Request) -> web.StreamResponse:
    """/api/sessions/{id}/..., /whip/{id}, /whep/{id}/...: the worker the id names."""
    view = _owner_or_404(request, request.match_info["id"])
    if isinstance(view, web.Response):
        return view
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return json_error(413, "too_large", f"at most {MAX_BODY_BYTES} bytes")
    response = await proxy.forward(request.app[HTTP], request, view.url or "", view.token)
    if response.status == 502:
        request.app[FLEET].lost(view)
    return response


async def to_any(request: web.Request) -> web.StreamResponse:
    """/api/settings, /api/ice, /api/transcribe: every worker runs the same flags; the roomiest answers."""
    view = request.app[FLEET].any_live()
    if view is None:
        return _no_room(request.app[FLEET], None, [])
    return await proxy.forward(request.app[HTTP], request, view.url or "", view.token)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def healthz(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    workers = fleet.views()
    alive = [w for w in workers if w["state"] in ("alive", "draining")]
    return web.json_response(
        {
            "status": "ok",
            "role": "front_door",
            "pid": os.getpid(),
            "sessions": sum(w["sessions"] for w in workers),
            "engine_ready": any(w["state"] == "alive" for w in workers),
            "engine": alive[0]["engine"] if alive else None,
            "workers": workers,
            "ray": request.app[CONFIG].ray,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[METRICS].render(request.app[HTTP])
    content_type, _, params = CONTENT_TYPE_LATEST.partition(";")
    charset = params.partition("charset=")[2].strip() or None
    return web.Response(body=body, content_type=content_type.strip(), charset=charset)


async def _start(app: web.Application) -> None:
    app[HTTP] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30), auto_decompress=False
    )
    await app[FLEET].start(app[HTTP])


async def _stop(app: web.Application) -> None:
    await app[FLEET].stop()
    await app[HTTP].close()


def create_front_door(fleet: Fleet, config: FrontDoorConfig) -> web.Application:
    app = web.Application(middlewares=[json_errors_middleware, token_middleware], client_max_size=MAX_BODY_BYTES)
    app[FLEET] = fleet
    app[CONFIG] = config
    app[METRICS] = FrontDoorMetrics(fleet)
    app.router.add_get("/", index)
    app.router.add_static("/static/", WEB_DIR, show_index=False)
    app.router.add_post("/api/offer", offer)
    app.router.add_post("/whip", whip_post)
    app.router.add_route("*", "/whip/{id}", to_owner)
    app.router.add_route("*", "/whep/{id}", to_owner)
    app.router.add_route("*", "/whep/{id}/{viewer}", to_owner)
    app.router.add_route("*", "/api/sessions/{id}", to_owner)
    app.router.add_route("*", "/api/sessions/{id}/{tail:.*}", to_owner)
    app.router.add_get("/api/settings", to_any)
    app.router.add_get("/api/ice", to_any)
    app.router.add_post("/api/transcribe", to_any)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    return app
