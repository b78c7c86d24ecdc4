"""Per-call live transcription on one shared speech thread.

`Transcriber.feed(pcm)` is called by the audio reader (the event loop in the
server): it only appends to a bounded buffer and wakes the `SpeechWorker`, never
runs a model. The worker — one thread for all calls, owned by the caller (the
server's worker registry, a test), separate from the video worker — drains the
buffer through Silero VAD and the adaptive end-of-speech rule (segmenter.py), runs
Whisper, and reports `TranscriptEvent`s through `on_event` (on the worker thread).

Why it is built this way (issue 16, measured on a 2-core CPU with tiny.en int8):
a Whisper decode costs ~0.6 s whatever the utterance's length, because ~0.5 s of it
is the encoder over a 30 s window. `stt.transcribe_window` decodes in a 10 s window
(~0.1 s greedy, ~0.16 s beam 5), so:

- partials (`final=False`): each `partial_interval_s` of new audio while the person
  talks, greedy, windowed. Local agreement: the words two successive partials agree
  on (all but the newest word) are committed and forced as the prefix of the next
  decode, so each decode only has the unconfirmed tail left to find;
- the fast final: at the end of speech, one beam-search windowed decode of the whole
  utterance (with the committed prefix only if `final_prefix`), sent at once unless it is doubtful (the guard
  refuses it or Whisper is unsure); a doubtful one waits for
- the careful decode: today's 30 s beam-5 decode with temperature fallback. With
  `careful="always"` it runs after every fast final and a second final
  (`revision=1`) corrects the first only when the words differ.
  Finals pass the hallucination guard; if partials of an utterance were shown and
  its final is refused, an empty final retracts them (it never becomes a prompt).

Vocabulary biasing (issue 22): `bias()` (given per call) returns the bias text, read before each
decode so the call's newest typed prompt counts (speech/vocabulary.py). Every decode gets it;
the hallucination guard treats biased decodes by their own rules (speech/guard.py).

Spoken commands act at prompt speed: a fast final that is a command phrase, or near one with
confidence (`decode_policy.command_of`), is sent at once with `command` set. The careful decode
then checks it; if it hears another command, a prompt or nothing, a correction (`revision=1`)
follows with what it heard, and the server undoes the command (server/call_speech.py).

Every final carries its stage times (`stages`, ms): `eos` (last voiced audio fed →
the audio that closed the utterance fed: the silence rule), `wait` (that audio fed →
the speech thread got to it), `decode` (Whisper), and the server adds `send`.

If the worker falls behind by more than `max_buffer_s`, the oldest audio is dropped
and counted (`stats["dropped_s"]`): live speech matters more than old speech.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from speakdraw.speech.audio import SAMPLE_RATE, Resampler, to_float32
from speakdraw.speech.decode_policy import agreed_prefix, command_of, doubtful, norm_words, tidy
from speakdraw.speech.guard import rejection
from speakdraw.speech.segmenter import UtteranceEvent, UtteranceSegmenter
from speakdraw.speech.stt import SpeechToText, Transcript
from speakdraw.speech.transcriber_types import CAREFUL_POLICIES, TranscriberOptions, TranscriptEvent
from speakdraw.speech.vad import WINDOW, SileroVAD
from speakdraw.speech.worker import SpeechWorker

log = logging.getLogger(__name__)

# Guard reasons that only say "not sure" of a biased decode: the careful decode's scores run lower than
# the fast one's on the same right words (tiny.en, en-gb "whole picture": -0.44 fast, -0.89 careful), so
# these never undo a command the fast decode heard with confidence.
UNSURE_REASONS = frozenset({"unsure", "bias_only", "bias_echo"})


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
        bias: Callable[[], str] | None = None,
    ) -> None:
        """`bias`: gives the bias text before each decode (None or "" = plain decodes)."""
        self.stt = stt
        self.bias = bias
        self.on_event = on_event
        self.options = options or TranscriberOptions()
        if self.options.careful not in CAREFUL_POLICIES:
            raise ValueError(f"careful must be one of {CAREFUL_POLICIES}")
        self.worker = worker  # the caller owns the thread (server/workers.py, a test, a notebook)
        self._vad = vad.stream()
        self._segmenter = UtteranceSegmenter(self.options.segmenter)
        self._lock = threading.Lock()
        self._chunks: deque[tuple[np.ndarray, float]] = deque()  # (16 kHz float32, time fed)
        self._buffered = 0
        self._resamplers: dict[int, Resampler] = {}
        self._rest = np.zeros(0, np.float32)  # < one VAD window left over
        self._flush = False
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()
        self._partial_at = 0  # utterance samples at the last partial
        self._partial_cost_s = 0.0
        self._partials_shown = False
        self._last_partial = ""  # local agreement: the previous hypothesis ...
        self._committed = ""  # ... and the words two hypotheses agreed on
        self._last_voiced_at = 0.0
        self._newest_fed = 0.0
        self._chunk_fed = 0.0  # fed time of the chunk being processed
        self._chunk_taken = 0.0  # when the speech thread took it
        self._spec: tuple[tuple[int, int], Transcript] | None = None  # ((utterance, speech_end), decode)
        self.last_stages: dict[str, float] = {}
        self.stats: dict[str, float] = {
            "fed_s": 0.0,
            "dropped_s": 0.0,
            "utterances": 0,
            "partials": 0,
            "finals": 0,
            "revisions": 0,
            "careful": 0,
            "speculative": 0,
            "speculative_used": 0,
            "rejected": 0,
            "discarded": 0,
            "commands": 0,
            "command_corrections": 0,
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

    def drain(self) -> None:
        try:
            self._process()
        finally:
            with self._lock:
                if not self._chunks and not self._flush:
                    self._idle.set()

    def _process(self) -> None:
        chunks, flush = self._take()
        taken = time.monotonic()
        for audio, fed_at in chunks:
            if self._closed:
                return
            self._newest_fed = self._chunk_fed = fed_at
            self._chunk_taken = taken
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
            self._chunk_fed = self._chunk_taken = time.monotonic()
            for seg in self._segmenter.flush():
                self._on_segment(seg)
        elif not self._closed and self._segmenter.speaking and self.backlog_s < 0.5:
            self._maybe_speculate() or self._maybe_partial()

    def _on_segment(self, seg: UtteranceEvent) -> None:
        if seg.kind == "start":
            self.stats["utterances"] += 1
            self._partial_at = 0
            self._partials_shown = False
            self._last_partial = self._committed = ""
        elif seg.kind == "discard":
            self.stats["discarded"] += 1
            self._retract(seg.utterance)
        elif seg.kind == "end":
            self._final(seg.utterance, seg.audio, seg.speech_s, seg.speech_end)

    def _bias_text(self) -> str:
        if self.bias is None:
            return ""
        try:
            return self.bias() or ""
        except Exception:  # a broken provider must not stop speech: decode plain
            log.exception("bias text provider failed")
            return ""

    def _decode(self, audio: np.ndarray, beam_size: int, prefix: str = "") -> Transcript:
        bias = {"prompt": prompt} if (prompt := self._bias_text()) else {}  # (an STT without biasing still works)
        if self.options.windowed:
            transcript = self.stt.transcribe_window(audio, beam_size=beam_size, prefix=prefix, **bias)
        else:
            transcript = self.stt.transcribe(audio, fast=beam_size == 1, **bias)
        self.stats["stt_s"] += transcript.elapsed_s
        return tidy(transcript)

    def _careful(self, audio: np.ndarray, fast: Transcript | None) -> Transcript:
        """The 30 s decode; a biased one takes the unbiased no-speech probability of the fast decode."""
        bias = {"prompt": prompt} if (prompt := self._bias_text()) else {}
        if getattr(self.stt, "live_language", None):  # a multilingual model: decode calls as the fast path does
            bias["language"] = self.stt.live_language
        careful = self.stt.transcribe(audio, fast=False, **bias)
        self.stats["stt_s"] += careful.elapsed_s
        self.stats["careful"] += 1
        if careful.prompt and fast is not None and fast.prompt:
            careful.no_speech_prob = fast.no_speech_prob
            for segment in careful.segments:
                segment.no_speech_prob = fast.no_speech_prob
        return tidy(careful)

    def _maybe_speculate(self) -> bool:
        """The person may have stopped: decode the utterance now, during the end-of-speech rule.

        The result is shown as a partial; if the rule then ends the utterance with no speech in
        between, it is the fast final, with no decode left to wait for.
        """
        o, seg = self.options, self._segmenter
        if not o.windowed or o.speculate_after_ms <= 0 or seg.silence_ms < o.speculate_after_ms:
            return False
        key = (seg.utterance, seg.speech_end)
        if (self._spec is not None and self._spec[0] == key) or seg.speech_s < o.min_partial_speech_s:
            return False
        transcript = self._decode(seg.current_audio(), o.final_beam)
        self._spec = (key, transcript)
        self.stats["speculative"] += 1
        if not self._closed and o.partials and doubtful(transcript, seg.speech_s) is None:
            self._emit_partial(seg.utterance, transcript)
        return True

    def _maybe_partial(self) -> None:
        o = self.options
        samples = self._segmenter.current_samples
        interval_s = max(o.partial_interval_s, 2.0 * self._partial_cost_s)
        if not o.partials or samples - self._partial_at < interval_s * SAMPLE_RATE:
            return
        if self._segmenter.speech_s < o.min_partial_speech_s or self._segmenter.silence_ms > 0:
            return
        self._partial_at = samples
        started = time.perf_counter()
        transcript = self._decode(self._segmenter.current_audio(), 1, self._committed)
        self._partial_cost_s = time.perf_counter() - started
        if self._closed or rejection(transcript, self._segmenter.speech_s) is not None:
            return
        self._committed = max(self._committed, agreed_prefix(self._last_partial, transcript.text), key=len)
        self._last_partial = transcript.text
        self._emit_partial(self._segmenter.utterance, transcript)

    def _emit_partial(self, utterance: int, transcript: Transcript) -> None:
        self._partials_shown = True
        self.stats["partials"] += 1
        self._emit(
            TranscriptEvent(
                utterance,
                transcript.text,
                False,
                transcript.language,
                transcript.duration_s,
                transcript.elapsed_s,
                time.monotonic() - self._newest_fed,
                emitted_at=time.monotonic(),
            )
        )

    def _final(self, utterance: int, audio: np.ndarray, speech_s: float, speech_end: int = -1) -> None:
        o = self.options
        stages = {
            "eos": max(0.0, self._chunk_fed - self._last_voiced_at) * 1000.0,
            "wait": max(0.0, time.monotonic() - self._chunk_fed) * 1000.0,  # thread lag + VAD up to here
        }
        started = time.perf_counter()
        sent = None  # the text of the final already sent
        if o.careful != "always" or o.windowed:
            prefix = self._committed if o.final_prefix else ""
            spec, self._spec = self._spec, None
            if spec is not None and spec[0] == (utterance, speech_end) and o.windowed:
                fast = spec[1]  # decoded during the silence rule, no speech since: nothing left to do
                prefix = ""
                self.stats["speculative_used"] += 1
            else:
                fast = self._decode(audio, o.final_beam, prefix)
            if prefix and doubtful(fast, speech_s) is not None:
                fast = self._decode(audio, o.final_beam)  # a wrong committed prefix: decode it free
            stages["decode"] = (time.perf_counter() - started) * 1000.0
            if self._closed:
                return
            why = doubtful(fast, speech_s) if o.windowed and o.careful != "never" else rejection(fast, speech_s)
            log.debug("utterance %d fast: %.2f %.2f %r", utterance, fast.no_speech_prob, fast.avg_logprob, fast.text)
            if why is None:
                sent = fast.text
                command = command_of(fast)
                self._send_final(utterance, fast, stages, 0, command.command if command else "")
                if command is not None and o.careful != "never":
                    self._check_command(utterance, audio, speech_s, fast, command.command)
                    return
                if o.careful != "always":
                    return
            elif o.careful == "never":
                self.stats["rejected"] += 1
                log.info("utterance %d refused (%s): %r", utterance, why, fast.text)
                self._retract(utterance)
                return
            else:
                log.info(
                    "utterance %d: fast final held back (%s, no_speech %.2f, logprob %.2f): %r",
                    utterance,
                    why,
                    fast.no_speech_prob,
                    fast.avg_logprob,
                    fast.text,
                )
        careful = self._careful(audio, fast if o.windowed else None)
        if self._closed:
            return
        reason = rejection(careful, speech_s)
        if sent is None:
            stages["decode"] = (time.perf_counter() - started) * 1000.0
            if reason is None:
                command = command_of(careful)
                self.stats["commands"] += command is not None
                self._send_final(utterance, careful, stages, 0, command.command if command else "")
            else:
                self.stats["rejected"] += 1
                log.info("utterance %d refused (%s): %r", utterance, reason, careful.text)
                self._retract(utterance)
        elif reason is not None or norm_words(careful.text) != norm_words(sent):
            self.stats["revisions"] += 1
            corrected = careful if reason is None else Transcript("", careful.language, careful.duration_s)
            command = command_of(corrected) if reason is None else None
            self._send_final(
                utterance, corrected, {"decode": careful.elapsed_s * 1000.0}, 1, command.command if command else ""
            )

    def _check_command(self, utterance: int, audio: np.ndarray, speech_s: float, fast: Transcript, said: str) -> None:
        """A command already went out on the fast decode: the careful decode confirms it or corrects it."""
        self.stats["commands"] += 1
        careful = self._careful(audio, fast)
        if self._closed:
            return
        reason = rejection(careful, speech_s)
        if reason in UNSURE_REASONS:
            return  # the careful decode is only unsure of it: no reason to take back what was confidently heard
        heard = command_of(careful) if reason is None else None
        if heard is not None and heard.command == said:
            return
        self.stats["revisions"] += 1
        self.stats["command_corrections"] += 1
        log.info(
            "utterance %d: command %r from the fast decode, the careful decode heard %r (%s)",
            utterance,
            said,
            careful.text,
            reason or (heard.command if heard else "a prompt"),
        )
        corrected = careful if reason is None else Transcript("", careful.language, careful.duration_s)
        self._send_final(
            utterance, corrected, {"decode": careful.elapsed_s * 1000.0}, 1, heard.command if heard else ""
        )

    def _send_final(
        self, utterance: int, transcript: Transcript, stages: dict[str, float], revision: int, command: str = ""
    ) -> None:
        if revision == 0:
            self.stats["finals"] += 1
            self.last_stages = {k: round(v, 1) for k, v in stages.items()}
        now = time.monotonic()
        self._emit(
            TranscriptEvent(
                utterance,
                transcript.text,
                True,
                transcript.language,
                transcript.duration_s,
                transcript.elapsed_s,
                now - self._last_voiced_at,
                revision,
                dict(stages),
                now,
                command,
            )
        )

    def _retract(self, utterance: int) -> None:
        if self._partials_shown:
            self._partials_shown = False
            self._emit(TranscriptEvent(utterance, "", True, emitted_at=time.monotonic()))

    def _emit(self, event: TranscriptEvent) -> None:
        try:
            self.on_event(event)
        except Exception:
            log.exception("transcript callback failed")
