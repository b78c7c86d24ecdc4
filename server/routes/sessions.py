"""Calls: the offer/answer path (`POST /api/offer`), hang-up, settings, ICE servers, health.

`offer()` reads top to bottom as the whole signaling path: parse (total: whatever the bytes,
a 4xx JSON error), admit (a slot is reserved before any await and released on every exit),
build the call's pipeline, answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from server.errors import json_error
from server.session import Session
from server.state import STATE, AppState
from server.workers import DeviceWorkers
from speakdraw.settings import Settings, settings_schema

log = logging.getLogger(__name__)


class OfferRefused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def parse_offer(body: bytes) -> tuple[str, Settings, dict[str, Any]]:
    """The offer's SDP and settings, or OfferRefused with the 4xx to send."""
    try:
        params = json.loads(body)
    except RecursionError:
        raise OfferRefused(json_error(400, "bad_json", "the body is nested too deeply")) from None
    except ValueError:  # includes UnicodeDecodeError
        raise OfferRefused(json_error(400, "bad_json", "the body is not valid JSON")) from None
    if not isinstance(params, dict) or params.get("type") != "offer" or not isinstance(params.get("sdp"), str):
        raise OfferRefused(json_error(400, "bad_sdp", 'expected {"sdp": "<offer SDP>", "type": "offer"}'))
    raw_settings = params.get("settings") or {}
    if not isinstance(raw_settings, dict):
        raise OfferRefused(json_error(400, "invalid_settings", '"settings" must be a JSON object'))
    try:
        settings = Settings().updated(raw_settings)
    except (ValidationError, TypeError, ValueError, RecursionError) as exc:
        raise OfferRefused(json_error(400, "invalid_settings", str(exc))) from None
    return params["sdp"], settings, params


def admission(state: AppState) -> web.Response | None:
    """None when one more call fits; else the 503 to send (session cap, or measured capacity)."""
    calls = len(state.sessions) + state.reserved
    capacity = state.workers.capacity
    retry = str(capacity.retry_after_s())
    if calls >= state.config.max_sessions:
        return json_error(
            503,
            "too_many_sessions",
            f"this server takes {state.config.max_sessions} calls at once",
            headers={"Retry-After": retry},
        )
    if not capacity.admits(calls + 1):
        return json_error(
            503,
            "server_full",
            f"one more call would push every call below {capacity.options.min_fps:g} fps on this device",
            headers={"Retry-After": retry},
        )
    return None


async def offer(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.content_type != "application/json":
        return json_error(415, "unsupported_media_type", "send the offer as application/json")
    limit = state.config.max_offer_bytes
    if request.content_length is not None and request.content_length > limit:
        return json_error(413, "too_large", f"an offer is at most {limit} bytes")
    refused = admission(state)
    if refused is not None:
        return refused
    state.reserved += 1  # before any await: offers arriving together cannot all pass the check
    try:
        body = await request.read()
        if len(body) > limit:
            return json_error(413, "too_large", f"an offer is at most {limit} bytes")
        try:
            sdp, settings, _params = parse_offer(body)
        except OfferRefused as exc:
            return exc.response
        try:
            pipeline = await state.workers.scheduler.run(lambda: state.new_pipeline(settings))
        except RuntimeError as exc:  # the device is shutting down
            return json_error(503, "shutting_down", str(exc), headers={"Retry-After": "5"})
        session = Session(
            state,
            pipeline,
            on_closed=lambda s: state.sessions.pop(s.id, None),
            connect_timeout_s=state.config.connect_timeout_s,
        )
        state.sessions[session.id] = session
    finally:
        state.reserved -= 1
    if pipeline.engine is not state.current_engine():  # the model became ready while this pipeline was made
        pipeline.set_engine(state.current_engine(), state.matting)
    try:
        answer = await session.accept(sdp)
    except Exception as exc:
        await session.close()
        log.info("refused offer: %r", exc)
        return json_error(400, "bad_sdp", f"cannot use this offer: {exc or type(exc).__name__}")
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session_id": session.id})


async def hang_up(request: web.Request) -> web.Response:
    session = request.app[STATE].sessions.get(request.match_info["id"])
    if session is None:
        return json_error(404, "unknown_session", "no such session")
    await session.close()
    return web.json_response({"status": "closed", "session_id": session.id})


async def get_settings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {"schema": settings_schema(), "defaults": Settings().model_dump(), "server": state.server_info()}
    )


async def get_ice(request: web.Request) -> web.Response:
    return web.json_response({"iceServers": [{"urls": url} for url in request.app[STATE].config.ice_servers]})


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {
            "status": "ok",
            "sessions": len(state.sessions),
            "engine_ready": state.engine_ready,
            "engine": state.engine_name(),
            "peer_connections": Session.live_peer_connections(),
            "tasks": len(asyncio.all_tasks()),
            "threads": threading.active_count(),
            "worker_threads": DeviceWorkers.alive_threads(),
            "capacity": state.workers.capacity.summary(),
        }
    )


def setup(app: web.Application) -> None:
    app.router.add_post("/api/offer", offer)
    app.router.add_delete("/api/sessions/{id}", hang_up)
    app.router.add_get("/api/settings", get_settings)
    app.router.add_get("/api/ice", get_ice)
    app.router.add_get("/healthz", healthz)
