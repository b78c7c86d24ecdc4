"""The aiohttp app: signaling, REST routes, static page. The whole offer/answer path is `offer()`."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from server import image_prompt, jitter, metrics, mjpeg
from server.auth import token_middleware
from server.config import WEB_DIR, ServerConfig
from server.errors import json_error, json_errors_middleware
from server.keys import CONFIG, LISTENER_HOSTS, LOAD_TASK
from server.session import Session
from server.transcribe import transcribe_handler
from speakdraw.engines import Engine, EngineOptions, PassthroughEngine, load_engine
from speakdraw.pipeline import Pipeline
from speakdraw.settings import Settings, settings_schema

log = logging.getLogger(__name__)


class AppState:
    """What every session shares: config, the loaded engine and matting model, the device worker."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.sessions: dict[str, Session] = {}
        # One inference worker per device: every session's frames take turns on it.
        self.video_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speakdraw-video")
        self.fallback = PassthroughEngine(config.simulate_model_ms)
        self.engine: Engine | None = None
        self.engine_ready = False
        self.matting: Any = None
        self.warnings: list[str] = []
        self.audio_listener_factory = None
        self.stt: Any = None

    def engine_name(self) -> str:
        return self.engine.name if self.engine is not None else self.fallback.name

    def current_engine(self) -> Engine:
        return self.engine if self.engine is not None else self.fallback

    def load_models(self) -> None:
        """Runs in a worker thread at start-up; a failure falls back, it never stops the server."""
        config = self.config
        options = EngineOptions(
            engine=config.engine,
            model=config.model,
            device=config.device,
            acceleration=config.acceleration,
            use_taesd=config.use_taesd,
            simulate_cost_ms=config.simulate_model_ms,
            extra={"ip_adapter": "auto" if config.ip_adapter else "off"},
        )
        if config.lcm_lora:
            options.extra["lcm_lora"] = config.lcm_lora
        if config.compile_mode:
            options.extra["compile_mode"] = config.compile_mode
        try:
            engine, warnings = load_engine(options)
        except Exception as exc:  # a broken install must not take the server down
            log.exception("engine %s failed to load", config.engine)
            engine, warnings = self.fallback, [f"engine {config.engine!r} failed to load ({exc}); serving passthrough"]
        self.warnings.extend(warnings)
        if config.matting == "rvm":
            try:
                from speakdraw.matting import load_matting

                self.matting = load_matting(device=getattr(engine, "device", "cpu"))
            except Exception as exc:
                self.warnings.append(f"matting unavailable, 'human' mode repaints the whole frame: {exc}")
                log.warning("matting unavailable: %s", exc)
        if config.stt != "off":  # speech: Whisper + Silero VAD, one shared speech thread (server/call_speech.py)
            try:
                from server.call_speech import load_speech, speech_listener_factory
                from speakdraw.speech import SpeechWorker

                stt, vad = load_speech(config.stt, config.stt_model, config.device)
                self.stt = stt
                self.audio_listener_factory = speech_listener_factory(stt, vad, SpeechWorker())
            except Exception as exc:
                self.warnings.append(f"speech-to-text unavailable, the call audio is not transcribed: {exc}")
                log.warning("speech-to-text unavailable: %s", exc)
        self.engine = engine
        self.engine_ready = True

    def new_pipeline(self, settings: Settings) -> Pipeline:
        return Pipeline(settings, engine=self.current_engine(), matting=self.matting)

    def server_info(self) -> dict[str, Any]:
        engine = self.current_engine()
        features = {"diffusion": False, "image_prompt": False}
        features.update(engine.features())
        features.update({"matting": self.matting is not None, "speech": self.stt is not None})
        return {
            "engine": engine.name,
            "requested_engine": self.config.engine,
            "model": getattr(engine, "model_id", "") or None,
            "device": getattr(engine, "device", "cpu"),
            "stt": self.config.stt,
            "matting": self.config.matting if self.matting is not None else "off",
            "ready": self.engine_ready,
            "features": features,
            "image_prompt_reason": image_prompt.unavailable_reason(self),  # None when image prompts work
            "warnings": list(self.warnings),
        }


STATE = web.AppKey("state", AppState)


async def offer(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.content_type != "application/json":
        return json_error(415, "unsupported_media_type", "send the offer as application/json")
    limit = state.config.max_offer_bytes
    if request.content_length is not None and request.content_length > limit:
        return json_error(413, "too_large", f"an offer is at most {limit} bytes")
    body = await request.read()
    if len(body) > limit:
        return json_error(413, "too_large", f"an offer is at most {limit} bytes")
    try:
        params = json.loads(body)
    except ValueError:
        return json_error(400, "bad_json", "the body is not valid JSON")
    if not isinstance(params, dict) or params.get("type") != "offer" or not isinstance(params.get("sdp"), str):
        return json_error(400, "bad_sdp", 'expected {"sdp": "<offer SDP>", "type": "offer"}')
    try:
        settings = Settings().updated(params.get("settings") or {})
    except (ValidationError, TypeError) as exc:
        return json_error(400, "invalid_settings", str(exc))
    if len(state.sessions) >= state.config.max_sessions:
        return json_error(503, "too_many_sessions", f"this server takes {state.config.max_sessions} calls at once")

    loop = asyncio.get_running_loop()
    pipeline = await loop.run_in_executor(state.video_executor, state.new_pipeline, settings)
    session = Session(state, pipeline, on_closed=lambda s: state.sessions.pop(s.id, None))
    state.sessions[session.id] = session
    if pipeline.engine is not state.current_engine():  # the model became ready while this pipeline was made
        pipeline.set_engine(state.current_engine(), state.matting)
    try:
        answer = await session.accept(params["sdp"])
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
        }
    )


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _load_models(app: web.Application) -> None:
    state = app[STATE]
    loop = asyncio.get_running_loop()
    # Not on the video worker: calls that join meanwhile get passthrough frames, then the model.
    app[LOAD_TASK] = loop.run_in_executor(None, state.load_models)
    app[LOAD_TASK].add_done_callback(lambda _: _engine_ready(state))


def _engine_ready(state: AppState) -> None:
    """Calls that joined while the model loaded switch to it at their next frame, and are told."""
    for session in list(state.sessions.values()):
        session.pipeline.set_engine(state.current_engine(), state.matting)
        session.send(session.status_message())


async def _close_sessions(app: web.Application) -> None:
    state = app[STATE]
    await asyncio.gather(*(s.close() for s in list(state.sessions.values())), return_exceptions=True)


async def _stop_workers(app: web.Application) -> None:
    state = app[STATE]
    state.video_executor.shutdown(wait=False, cancel_futures=True)
    if state.audio_listener_factory is not None:  # the speech thread (server/call_speech.py)
        await asyncio.get_running_loop().run_in_executor(None, state.audio_listener_factory.close)


def create_app(config: ServerConfig, *, load_models: bool = True) -> web.Application:
    jitter.install()  # frames reach the pipeline at their last packet, not one frame interval later
    app = web.Application(
        middlewares=[json_errors_middleware, token_middleware],
        client_max_size=max(config.max_offer_bytes, config.max_upload_bytes),
    )
    state = AppState(config)
    app[STATE] = state
    app[CONFIG] = config
    app[LISTENER_HOSTS] = {config.port: config.host, config.https_port: config.https_host}
    app.router.add_get("/", index)
    app.router.add_static("/static/", WEB_DIR, show_index=False)
    app.router.add_post("/api/offer", offer)
    app.router.add_delete("/api/sessions/{id}", hang_up)
    app.router.add_get("/api/settings", get_settings)
    app.router.add_get("/api/ice", get_ice)
    app.router.add_post("/api/transcribe", transcribe_handler)
    app.router.add_get("/healthz", healthz)
    if load_models:
        app.on_startup.append(_load_models)
    app.on_shutdown.append(_close_sessions)
    app.on_cleanup.append(_stop_workers)
    metrics.setup(app)
    mjpeg.setup(app)
    image_prompt.setup(app)
    return app
