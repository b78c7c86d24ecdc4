"""Every thread the server starts, named, owned in one place, stopped in one place.

| thread | what runs there |
|---|---|
| `speakdraw-video` | the device runner: every call's frames (batched), image-prompt encodes, warm-up |
| `speakdraw-matte` | RVM mattes overlapping a GPU/passthrough step (`Pipeline.matte_executor`) |
| `speakdraw-speech` | VAD + Whisper for every call (`speakdraw.speech.SpeechWorker`), created when speech loads |
| `speakdraw-load` | loading models at start-up (so calls can join meanwhile) |
| `speakdraw-io` | decoding uploads (images, audio files) and `/api/transcribe` |
| `speakdraw-jpeg` | MJPEG / snapshot encodes |
| `speakdraw-codec` | the event loop's default executor: aiortc's video encoder and decoder calls |

The media layer (`speakdraw/`) starts no thread of its own: `Pipeline` and `Transcriber` take
theirs from here. `shutdown()` stops them all; a model step in flight gets `step_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from server.capacity import CapacityModel, CapacityOptions
from server.device_runner import DeviceRunner
from speakdraw.speech import SpeechWorker

log = logging.getLogger(__name__)

THREAD_PREFIX = "speakdraw-"


def _pool(name: str, workers: int = 1) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=THREAD_PREFIX + name)


class DeviceWorkers:
    def __init__(self, capacity: CapacityOptions | None = None, max_batch: int = 8) -> None:
        self.matte = _pool("matte")
        self.runner = DeviceRunner(self.matte, CapacityModel(capacity), max_batch=max_batch)
        self.load = _pool("load")
        self.io = _pool("io")
        self.jpeg = _pool("jpeg")
        self.codec = _pool("codec", 4)
        self.speech: SpeechWorker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def capacity(self) -> CapacityModel:
        return self.runner.capacity

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """aiortc runs its codecs in the loop's default executor: make that one ours."""
        self._loop = loop
        loop.set_default_executor(self.codec)

    def speech_worker(self) -> SpeechWorker:
        if self.speech is None:
            self.speech = SpeechWorker(name=THREAD_PREFIX + "speech")
        return self.speech

    def shutdown(self, step_timeout_s: float = 2.0) -> None:
        """Stop every thread; queued work is cancelled, work in flight gets `step_timeout_s`."""
        self.runner.shutdown(step_timeout_s)
        if self.speech is not None:
            self.speech.stop()
        for pool in (self.matte, self.load, self.io, self.jpeg, self.codec):
            pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def wait_stopped(timeout_s: float) -> list[str]:
        """Join this server's threads for up to `timeout_s`; the names of those still alive."""
        deadline = time.monotonic() + timeout_s
        for thread in threading.enumerate():
            if thread.name.startswith(THREAD_PREFIX) and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        return DeviceWorkers.alive_threads()

    @staticmethod
    def alive_threads() -> list[str]:
        """Names of this server's threads still alive (the shutdown test reads them)."""
        return sorted(t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX) and t.is_alive())
