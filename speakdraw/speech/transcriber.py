"""Per-call live transcription on one shared speech thread.

`Transcriber.feed(pcm)` is called by the audio reader (the event loop in the
server): it only appends to a bounded buffer and wakes the `SpeechWorker`, never
runs a model. The worker — one thread for all calls, separate from the video worker
so speech never stalls frames and frames never stall speech — drains the buffer
through Silero VAD and the utterance segmenter, runs Whisper, and reports
`TranscriptEvent`s through `on_event` (called on the worker thread):

- partials (`final=False`) each `partial_interval_s` of new utterance audio, greedy
  decoding, only while the person is talking: none once silence starts (so no partial
  is in flight when the end-of-speech rule fires and the final is due), none while the
  worker is behind, and never more often than twice the last partial's cost (the
  speech thread stays at most ~50% busy with partials, finals first);
- one final per utterance, after the end-of-speech silence rule, beam search.
  Finals pass the hallucination guard; if partials of an utterance were shown and
  its final is refused, an empty final retracts them (it never becomes a prompt).

If the worker falls behind by more than `max_buffer_s`, the oldest audio is dropped
and counted (`stats["dropped_s"]`): live speech matters more than old speech.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speakdraw.speech.audio import SAMPLE_RATE, Resampler, to_float32
from speakdraw.speech.guard import rejection
from speakdraw.speech.segmenter import SegmenterOptions, UtteranceSegmenter
from speakdraw.speech.stt import SpeechToText
from speakdraw.speech.vad import WINDOW, SileroVAD

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TranscriptEvent:
    utterance: int
    text: str
    final: bool
    language: str = ""
    audio_s: float = 0.0  # utterance audio transcribed
    stt_s: float = 0.0  # time Whisper took
    latency_s: float = 0.0  # finals: last speech fed → event; partials: newest audio fed → event

    def message(self) -> dict[str, Any]:
        """The data-channel `transcript` message (DESIGN.md)."""
        return {"type": "transcript", "utterance": self.utterance, "text": self.text, "final": self.final}


@dataclass
class TranscriberOptions:
    segmenter: SegmenterOptions = field(default_factory=SegmenterOptions)
    partials: bool = True
    partial_interval_s: float = 0.7
    max_buffer_s: float = 10.0
    min_partial_speech_s: float = 0.3


class SpeechWorker:
    """One thread that serves every Transcriber in turn (round-robin, one drain each).

    Its owner creates it and calls `close()` on shutdown: `close()` lets a transcription
    in progress finish and joins the thread (a thread killed inside CTranslate2 at
    interpreter exit aborts the process). There is no process-wide default.
    """

    def __init__(self, name: str = "speakdraw-speech") -> None:
        self.name = name
        self._ready: deque[Transcriber] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(self, transcriber: Transcriber) -> None:
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
        while True:
            with self._cond:
                while not self._ready and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                transcriber = self._ready.popleft()
            try:
                transcriber._work()
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


class Transcriber:
    """Live transcription of one audio stream (one call)."""

    def __init__(
        self,
        stt: SpeechToText,
        vad: SileroVAD,
        on_event: Callable[[TranscriptEvent], None],
        *,
        worker: SpeechWorker,
        options: TranscriberOptions | None = None,
    ) -> None:
        self.stt = stt
        self.on_event = on_event
        self.options = options or TranscriberOptions()
        self.worker = worker  # the caller owns the thread (server/workers.py, a test, a notebook)
        self._vad = vad.stream()
        self._segmenter = UtteranceSegmenter(self.options.segmenter)
        self._lock = threading.Lock()
        self._chunks: deque[tuple[np.ndarray, float]] = deque()  # (16 kHz float32, time fed)
        self._buffered = 0
        self._resamplers: dict[int, Resampler] = {}
        self._rest = np.zeros(0, np.float32)  # < one VAD window left over
        self._rest_time = 0.0
        self._flush = False
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()
        self._partial_at = 0  # utterance samples at the last partial
        self._partial_cost_s = 0.0
        self._partials_shown = False
        self._last_voiced_at = 0.0
        self._newest_fed = 0.0
        self.stats: dict[str, float] = {
            "fed_s": 0.0,
            "dropped_s": 0.0,
            "utterances": 0,
            "partials": 0,
            "finals": 0,
            "rejected": 0,
            "discarded": 0,
            "stt_s": 0.0,
        }

    # ---- any thread ---------------------------------------------------------------
    def feed(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        """Mono PCM (int16 or float) at `sample_rate`. Never blocks on the model."""
        if self._closed:
            return
        audio = to_float32(np.asarray(pcm).reshape(-1))
        if sample_rate != SAMPLE_RATE:
            audio = self._resamplers.setdefault(sample_rate, Resampler(sample_rate))(audio)
        if len(audio) == 0:
            return
        limit = int(self.options.max_buffer_s * SAMPLE_RATE)
        with self._lock:
            self._idle.clear()
            self._chunks.append((audio, time.monotonic()))
            self._buffered += len(audio)
            self.stats["fed_s"] += len(audio) / SAMPLE_RATE
            while self._buffered > limit and len(self._chunks) > 1:
                old, _ = self._chunks.popleft()
                self._buffered -= len(old)
                self.stats["dropped_s"] += len(old) / SAMPLE_RATE
        self.worker.submit(self)

    def flush(self) -> None:
        """The stream ended: finish the current utterance (its final still comes)."""
        with self._lock:
            self._idle.clear()
            self._flush = True
        self.worker.submit(self)

    def close(self) -> None:
        """Stop: buffered audio is dropped, no more events."""
        self._closed = True
        with self._lock:
            self._chunks.clear()
            self._buffered = 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until everything fed so far has been transcribed (tests, benches, file input)."""
        return self._idle.wait(timeout)

    @property
    def backlog_s(self) -> float:
        with self._lock:
            return self._buffered / SAMPLE_RATE

    # ---- the speech thread ----------------------------------------------------------
    def _take(self) -> tuple[list[tuple[np.ndarray, float]], bool]:
        with self._lock:
            chunks = list(self._chunks)
            self._chunks.clear()
            self._buffered = 0
            flush, self._flush = self._flush, False
        return chunks, flush

    def _work(self) -> None:
        try:
            self._process()
        finally:
            with self._lock:
                if not self._chunks and not self._flush:
                    self._idle.set()

    def _process(self) -> None:
        chunks, flush = self._take()
        for audio, fed_at in chunks:
            if self._closed:
                return
            self._newest_fed = fed_at
            joined = np.concatenate([self._rest, audio]) if len(self._rest) else audio
            usable = len(joined) - len(joined) % WINDOW
            self._rest = joined[usable:]
            if usable == 0:
                continue
            windows = joined[:usable].reshape(-1, WINDOW)
            probs = self._vad.probs(windows)
            for window, prob in zip(windows, probs, strict=True):
                if prob >= self.options.segmenter.threshold:
                    self._last_voiced_at = fed_at
                for seg in self._segmenter.push(window, float(prob)):
                    self._on_segment(seg)
        if flush:
            for seg in self._segmenter.flush():
                self._on_segment(seg)
        elif not self._closed and self._segmenter.speaking and self.backlog_s < 0.5:
            self._maybe_partial()

    def _on_segment(self, seg) -> None:
        if seg.kind == "start":
            self.stats["utterances"] += 1
            self._partial_at = 0
            self._partials_shown = False
        elif seg.kind == "discard":
            self.stats["discarded"] += 1
            self._retract(seg.utterance)
        elif seg.kind == "end":
            self._final(seg.utterance, seg.audio, seg.speech_s)

    def _maybe_partial(self) -> None:
        o = self.options
        samples = self._segmenter.current_samples
        interval_s = max(o.partial_interval_s, 2.0 * self._partial_cost_s)
        if not o.partials or samples - self._partial_at < interval_s * SAMPLE_RATE:
            return
        if self._segmenter.speech_s < o.min_partial_speech_s or self._segmenter.silence_ms > 0:
            return
        self._partial_at = samples
        transcript = self.stt.transcribe(self._segmenter.current_audio(), fast=True)
        self.stats["stt_s"] += transcript.elapsed_s
        self._partial_cost_s = transcript.elapsed_s
        if self._closed or rejection(transcript, self._segmenter.speech_s) is not None:
            return
        self._partials_shown = True
        self.stats["partials"] += 1
        self._emit(
            TranscriptEvent(
                self._segmenter.utterance,
                transcript.text,
                False,
                transcript.language,
                transcript.duration_s,
                transcript.elapsed_s,
                time.monotonic() - self._newest_fed,
            )
        )

    def _final(self, utterance: int, audio: np.ndarray, speech_s: float) -> None:
        transcript = self.stt.transcribe(audio, fast=False)
        self.stats["stt_s"] += transcript.elapsed_s
        if self._closed:
            return
        reason = rejection(transcript, speech_s)
        if reason is not None:
            self.stats["rejected"] += 1
            log.info("utterance %d refused (%s): %r", utterance, reason, transcript.text)
            self._retract(utterance)
            return
        self.stats["finals"] += 1
        self._emit(
            TranscriptEvent(
                utterance,
                transcript.text,
                True,
                transcript.language,
                transcript.duration_s,
                transcript.elapsed_s,
                time.monotonic() - self._last_voiced_at,
            )
        )

    def _retract(self, utterance: int) -> None:
        if self._partials_shown:
            self._partials_shown = False
            self._emit(TranscriptEvent(utterance, "", True))

    def _emit(self, event: TranscriptEvent) -> None:
        try:
            self.on_event(event)
        except Exception:
            log.exception("transcript callback failed")
