"""The speech thread: one for every call's Transcriber, owned by the caller (the server, a test)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Protocol

from speakdraw.speech.priority import SPEECH_NICE, set_thread_nice

log = logging.getLogger(__name__)


class SpeechJob(Protocol):
    def drain(self) -> None:
        """Work through what was fed since the last drain (on the speech thread)."""


class SpeechWorker:
    """One thread that serves every Transcriber in turn (round-robin, one drain each).

    Its owner creates it and calls `close()` on shutdown: `close()` lets a transcription
    in progress finish and joins the thread (a thread killed inside CTranslate2 at
    interpreter exit aborts the process). There is no process-wide default.
    """

    def __init__(self, name: str = "speakdraw-speech") -> None:
        self.name = name
        self._ready: deque[SpeechJob] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(self, transcriber: SpeechJob) -> None:
        with self._cond:
            if self._stopped:
                return
            if transcriber not in self._ready:
                self._ready.append(transcriber)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        set_thread_nice(SPEECH_NICE)  # ahead of the video threads (priority.py)
        while True:
            with self._cond:
                while not self._ready and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                transcriber = self._ready.popleft()
            try:
                transcriber.drain()
            except Exception:  # one call's failure must not end speech for the others
                log.exception("speech worker: transcriber failed")

    def stop(self, timeout: float | None = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._ready.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Same as `stop()`: the name the server's worker registry calls."""
        self.stop(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
