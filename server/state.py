"""What every session and route shares, in one typed object, and the aiohttp keys that find it.

`AppState` is made by `create_app` and stored under `STATE`; routes read `request.app[STATE]`
and nothing imports `server.app` back. Fields are filled in this order: config and workers at
creation, the observer (metrics) by `create_app`, engine / matting / STT when `load_models`
finishes on the `speakdraw-load` thread (calls that joined meanwhile switch at their next frame).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from aiortc import MediaStreamTrack

from server.call_speech import SpeechObserver
from server.capacity import CapacityOptions
from server.config import ServerConfig
from server.memory import MemoryReleaser
from server.notices import notices
from server.resume import ResumeStore
from server.tasks import TaskSet
from server.tracks import VideoObserver
from server.workers import DeviceWorkers
from speakdraw.engines import Engine, EngineOptions, PassthroughEngine, load_engine
from speakdraw.pipeline import Matting, Pipeline
from speakdraw.settings import Settings
from speakdraw.speech import SpeechToText

if TYPE_CHECKING:  # typing only: session.py takes an AppState, it does not import this module at run time
    from server.call_speech import AudioListener
    from server.session import Session

log = logging.getLogger(__name__)


class Observer(VideoObserver, SpeechObserver, Protocol):
    """Metrics hooks a session calls (server/metrics.py implements them)."""

    def message_sent(self, message: dict[str, Any]) -> None: ...


SpeechFactory = Callable[["Session", MediaStreamTrack, Observer | None], "AudioListener"]


class AppState:
    def __init__(self, config: ServerConfig, workers: DeviceWorkers | None = None) -> None:
        self.config = config
        self.workers = workers or DeviceWorkers(CapacityOptions.from_config(config))
        self.sessions: dict[str, Session] = {}
        self.reserved = 0  # offers admitted and still being set up (counted against the limits)
        self.uploads_in_progress = 0  # /api/transcribe uploads decoding or transcribing
        self.observer: Observer | None = None
        self.fallback = PassthroughEngine(config.simulate_model_ms)
        self.engine: Engine | None = None
        self.engine_ready = False
        self.matting: Matting | None = None
        self.stt: SpeechToText | None = None
        self.speech_factory: SpeechFactory | None = None
        self.resume_store = ResumeStore(config.resume_window_s)  # calls lost without a hang-up (server/resume.py)
        self.tasks = TaskSet("app")  # tasks that outlive a request or a call (a close, a viewer's close)
        self.memory = MemoryReleaser(self.workers.io)  # freed memory back to the OS after calls (server/memory.py)
        self.patches: Any = None  # what aiortc_patches.install did (server/aiortc_patches.py), for /healthz
        self.warnings: list[str] = []
        self.draining = False  # a cluster worker that takes no new calls (server/cluster/worker_side.py)

    def engine_name(self) -> str:
        return self.current_engine().name

    def current_engine(self) -> Engine:
        return self.engine if self.engine is not None else self.fallback

    def load_models(self) -> None:
        """Runs on the `speakdraw-load` thread at start-up; a failure falls back, it never stops the server."""
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
        if config.stt != "off":  # speech: Whisper + Silero VAD on the speakdraw-speech thread
            try:
                from server.call_speech import load_speech, load_vocabulary, speech_listener_factory

                stt, vad = load_speech(config.stt, config.stt_model, config.device)
                if stt is not None and vad is not None:
                    self.stt = stt
                    vocabulary = load_vocabulary(config.stt_bias, config.stt_vocabulary)
                    worker = self.workers.speech_worker()
                    self.speech_factory = speech_listener_factory(stt, vad, worker=worker, vocabulary=vocabulary)
            except Exception as exc:
                self.warnings.append(f"speech-to-text unavailable, the call audio is not transcribed: {exc}")
                log.warning("speech-to-text unavailable: %s", exc)
        try:  # on the thread every step will run on (CUDA graphs are per thread)
            self.workers.runner.call(engine.warmup).result()
        except Exception as exc:
            log.exception("engine warm-up failed")
            self.warnings.append(f"warm-up of {engine.name} failed ({exc}); the first frames may be slow")
        self.engine = engine
        self.engine_ready = True

    def new_pipeline(self, settings: Settings) -> Pipeline:
        return Pipeline(settings, engine=self.current_engine(), matting=self.matting, matte_executor=self.workers.matte)

    def image_prompt_reason(self) -> str | None:
        """Why this server's loaded model takes no image prompts now (None when it does)."""
        if not self.engine_ready:
            return "the model is still loading; image prompts are available once it is ready"
        return self.current_engine().image_prompt_status()

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
            "image_prompt_reason": self.image_prompt_reason(),  # None when image prompts work
            "warnings": list(self.warnings),
            "notices": notices(self.warnings),  # the same, one plain sentence each (server/notices.py)
        }


STATE = web.AppKey("state", AppState)
LISTENER_HOSTS = web.AppKey("listener_hosts", dict)  # port -> the host that listener is bound to
LOAD_TASK = web.AppKey("load_task", asyncio.Future)  # start-up model loading
