"""The aiohttp app: one `AppState`, the routes grouped by what they serve, and the start/stop hooks.

Routes live in `server/routes/` (sessions, image prompt, MJPEG, transcribe, metrics, WHIP/WHEP); each
takes what it needs from `request.app[STATE]` (server/state.py). Threads belong to `state.workers`
(server/workers.py), stopped in `_stop_workers`; tasks that outlive a request or a call belong to
`state.tasks` (server/tasks.py), awaited at shutdown. The changes to aiortc/aioice are installed here,
once, by `aiortc_patches.install` (server/aiortc_patches.py).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from server import aiortc_patches, media_ports, memory, metrics
from server.auth import token_middleware
from server.config import WEB_DIR, ServerConfig
from server.errors import json_errors_middleware
from server.routes import image_prompt, mjpeg, sessions, transcribe, whip
from server.routes import metrics as metrics_route
from server.state import LISTENER_HOSTS, LOAD_TASK, STATE, AppState


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _start_workers(app: web.Application) -> None:
    app[STATE].workers.attach_loop(asyncio.get_running_loop())


async def _load_models(app: web.Application) -> None:
    state = app[STATE]
    loop = asyncio.get_running_loop()
    # Not on the device thread: calls that join meanwhile get passthrough frames, then the model.
    app[LOAD_TASK] = loop.run_in_executor(state.workers.load, state.load_models)
    app[LOAD_TASK].add_done_callback(lambda _: _models_ready(state))


def _models_ready(state: AppState) -> None:
    """Calls that joined while the models loaded switch to them at their next frame, and are told."""
    for session in list(state.sessions.values()):
        session.models_ready()
    state.memory.models_loaded(len(state.sessions))  # the start-up heap is frozen (server/memory.py)


async def _close_sessions(app: web.Application) -> None:
    state = app[STATE]
    await asyncio.gather(*(s.close() for s in list(state.sessions.values())), return_exceptions=True)
    await state.tasks.wait(timeout=SHUTDOWN_TASKS_WAIT_S)  # closes already under way finish


async def _cancel_tasks(app: web.Application) -> None:
    app[STATE].memory.close()
    await app[STATE].tasks.close()


async def _stop_workers(app: web.Application) -> None:
    # No wait here for a long step in flight: `speakdraw serve` gives threads a short grace at exit.
    app[STATE].workers.shutdown(step_timeout_s=0.0)


SHUTDOWN_TASKS_WAIT_S = 5.0


def create_app(config: ServerConfig, *, load_models: bool = True) -> web.Application:
    """The app for `config`; raises aiortc_patches.PatchRefused when a flag needs a change to aiortc/aioice
    that does not fit the installed version."""
    patches = aiortc_patches.install(config)
    memory.limit_arenas()  # before the server's threads start (server/memory.py)
    app = web.Application(
        middlewares=[json_errors_middleware, token_middleware],
        client_max_size=max(config.max_offer_bytes, config.max_upload_bytes, config.max_image_bytes),
    )
    state = AppState(config)
    state.patches = patches
    state.warnings.extend(patches.skipped.values())
    app[STATE] = state
    app[LISTENER_HOSTS] = {config.port: config.host, config.https_port: config.https_host}
    app.router.add_get("/", index)
    app.router.add_static("/static/", WEB_DIR, show_index=False)
    app.on_startup.append(_start_workers)
    if load_models:
        app.on_startup.append(_load_models)
    app.on_shutdown.append(_close_sessions)
    app.on_cleanup.append(_cancel_tasks)
    app.on_cleanup.append(_stop_workers)
    state.observer = metrics.install(app, state.sessions)
    metrics_route.setup(app)
    sessions.setup(app)
    transcribe.setup(app)
    mjpeg.setup(app)
    image_prompt.setup(app)
    whip.setup(app)
    media_ports.setup(app, config.media_ports)
    return app
