"""Calls: the offer/answer path (`POST /api/offer`), hang-up, settings, ICE servers, health.

`offer()` reads top to bottom as the whole signaling path: parse (total: whatever the bytes,
a 4xx JSON error), admit (a slot is reserved before any await and released on every exit),
build the call's pipeline, answer (server/negotiation.py, shared with WHIP and WHEP). From the
moment the call's peer connection exists, any failure closes the call before the error goes out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiortc import RTCSessionDescription
from pydantic import ValidationError

from server import codecs, ice, negotiation, resume
from server.cluster import worker_side
from server.codec_cost import PROBE
from server.errors import json_error
from server.negotiation import OfferRefused
from server.session import Session
from server.state import STATE, AppState
from server.workers import DeviceWorkers
from speakdraw.pipeline import Pipeline
from speakdraw.settings import Settings, settings_schema

log = logging.getLogger(__name__)


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


def _resumes(state: AppState, resume_id: Any) -> bool:
    """Whether an offer's `resume` names a call this server holds (live, or lost within `--resume-window`)."""
    if not isinstance(resume_id, str) or not resume_id:
        return False
    return resume_id in state.sessions or resume_id in state.resume_store


def admission(state: AppState, resume_id: Any = None) -> web.Response | None:
    """None when one more call fits; else the 503 to send (session cap, or measured capacity).

    Measured capacity refuses only by `CapacityModel.room` (server/capacity.py): an empty server always
    admits, and a figure from another size or from long ago never refuses on its own. A `resume` is never
    refused for capacity: a live call it takes over gives up its own slot, a lost one left a slot free."""
    if (draining := worker_side.draining_refusal(state)) is not None:
        return draining
    calls = len(state.sessions) + state.reserved
    resuming = _resumes(state, resume_id)
    if resuming and resume_id in state.sessions:
        calls -= 1  # its own slot
    capacity = state.workers.capacity
    retry = str(capacity.retry_after_s())
    if calls >= state.config.max_sessions:
        return json_error(
            503,
            "too_many_sessions",
            f"this server takes {state.config.max_sessions} calls at once",
            headers={"Retry-After": retry},
        )
    if not resuming and capacity.room(calls) < 1:
        return json_error(503, "server_full", capacity.full_message(calls), headers={"Retry-After": retry})
    return None


async def start_session(
    state: AppState,
    sdp: str,
    settings: Settings,
    on_closed: Callable[[Session], None] | None = None,
    resume_id: Any = None,
) -> tuple[Session, RTCSessionDescription, bool]:
    """Admit, build the call's pipeline on the device thread, answer the offer (the page's offer and WHIP's).

    Raises OfferRefused with the response to send. A slot is reserved before any await and released on
    every exit, so offers arriving together cannot overshoot `--max-sessions` or the measured capacity.
    Once the call's peer connection exists, whatever goes wrong (a refused offer, a bug, a cancelled
    request) closes the call, so no peer connection, pipeline or slot outlives a failed offer.
    """
    refused = admission(state, resume_id)
    if refused is not None:
        raise OfferRefused(refused)
    session: Session | None = None
    pipeline: Pipeline | None = None
    lost: resume.LostCall | None = None
    state.reserved += 1
    reserved = True
    try:
        lost = await resume.claim(state, resume_id)  # a rejoin takes over its lost call's state
        if lost is not None:
            settings = resume.settings_of(lost)
        try:
            pipeline = await state.workers.runner.run(lambda: state.new_pipeline(settings))
        except RuntimeError as exc:  # the device is shutting down
            raise OfferRefused(json_error(503, "shutting_down", str(exc), headers={"Retry-After": "5"})) from None
        session = Session(
            state,
            pipeline,
            on_closed=on_closed or (lambda s: state.sessions.pop(s.id, None)),
            connect_timeout_s=state.config.connect_timeout_s,
        )
        if lost is not None:
            resume.apply(lost, session)
        state.sessions[session.id] = session
        state.reserved -= 1  # the call counts in `sessions` now
        reserved = False
        if pipeline.engine is not state.current_engine():  # the model became ready while this pipeline was made
            pipeline.set_engine(state.current_engine(), state.matting)
        answer = await session.accept(sdp)
    except BaseException:
        if reserved:
            state.reserved -= 1
        if session is not None:
            await _discard(state, session)
        elif pipeline is not None:
            await _close_pipeline(state, pipeline)
        if lost is not None:
            state.resume_store.keep(lost)  # a failed rejoin loses nothing: the next one can still take it
        raise
    return session, answer, lost is not None


async def _discard(state: AppState, session: Session) -> None:
    """Close a call whose offer failed; a cancelled request still closes it (the app's task set owns the close)."""
    close = state.tasks.spawn(session.close(), name=f"close failed offer {session.id[:8]}")
    try:
        await asyncio.shield(close)
    except Exception:
        log.exception("session %s: close after a failed offer failed", session.id[:8])


async def _close_pipeline(state: AppState, pipeline: Pipeline) -> None:
    try:
        await state.workers.runner.run(pipeline.close)
    except RuntimeError:  # the runner is shut down: nothing runs its frames any more
        pipeline.close()


async def offer(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.content_type != "application/json":
        return json_error(415, "unsupported_media_type", "send the offer as application/json")
    limit = state.config.max_offer_bytes
    if request.content_length is not None and request.content_length > limit:
        return json_error(413, "too_large", f"an offer is at most {limit} bytes")
    body = await request.read()  # admission needs the body: a `resume` is never refused for capacity
    if len(body) > limit:
        return json_error(413, "too_large", f"an offer is at most {limit} bytes")
    try:
        sdp, settings, params = parse_offer(body)
        session, answer, resumed = await start_session(state, sdp, settings, resume_id=params.get("resume"))
    except OfferRefused as exc:
        return exc.response
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session_id": session.id, "resumed": resumed})


async def hang_up(request: web.Request) -> web.Response:
    session = request.app[STATE].sessions.get(request.match_info["id"])
    if session is None:
        return json_error(404, "unknown_session", "no such session")
    await session.close()
    return web.json_response({"status": "closed", "session_id": session.id})


async def get_settings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    server = state.server_info() | {"video_codec": codecs.describe(state.config.video_codec)}
    return web.json_response({"schema": settings_schema(), "defaults": Settings().model_dump(), "server": server})


async def get_ice(request: web.Request) -> web.Response:
    """ICE servers (TURN credentials minted per request), the ICE policy and the video codec the page should
    prefer: the one this server picked (`--video-codec`, or for `auto` the cheapest measured encoder)."""
    config = request.app[STATE].config
    return web.json_response({**ice.from_config(config).api_body(), "videoCodec": codecs.picked(config.video_codec)})


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {
            "status": "ok",
            "sessions": len(state.sessions),
            "engine_ready": state.engine_ready,
            "engine": state.engine_name(),
            "peer_connections": negotiation.live_peer_connections(),
            "tasks": len(asyncio.all_tasks()),
            "threads": threading.active_count(),
            "worker_threads": DeviceWorkers.alive_threads(),
            "capacity": state.workers.capacity.summary(len(state.sessions) + state.reserved),
            **worker_side.health(state),  # cluster workers: "worker", "pid", "draining"
            "aiortc_patches": state.patches.as_dict() if state.patches is not None else None,
            "memory": state.memory.summary(),
        }
    )


async def _measure_encoders(app: web.Application) -> None:
    """Start measuring the video encoders on the codec thread (server/codec_cost.py; once per process); log the pick."""
    choice = app[STATE].config.video_codec

    def picked(_) -> None:
        described = codecs.describe(choice)
        log.info("video codec: %s (--video-codec %s: %s)", described["picked"], choice, described["reason"])

    PROBE.start(app[STATE].workers.codec).add_done_callback(picked)


def setup(app: web.Application) -> None:
    app.on_startup.append(_measure_encoders)
    app.router.add_post("/api/offer", offer)
    app.router.add_delete("/api/sessions/{id}", hang_up)
    app.router.add_get("/api/settings", get_settings)
    app.router.add_get("/api/ice", get_ice)
    app.router.add_get("/healthz", healthz)
