"""The call's microphone → live transcripts: read the aiortc audio track, feed the Transcriber.

`AudioListener` is an asyncio task that awaits `track.recv()` continuously (so aiortc's
own frame queue never grows), converts each frame to 16 kHz mono float32 with the
server's one PCM path (`server/pcm.py`) and hands it to `Transcriber.feed`, which only
appends to a bounded buffer: no model code ever runs on the event loop. The transcriber reports from the
shared speech thread; the listener hops each event back onto the loop with
`call_soon_threadsafe` and gives it to `on_event` (a callable or a coroutine function).

If anything in that chain raises, the listener logs it once and switches to draining:
it goes on reading (and discarding) the track until it ends, so aiortc's queue stays
bounded, and the call goes on without speech.

`speech_listener_factory(stt, vad, worker, vocabulary=...)` is what `AppState.speech_factory`
holds: it builds one listener per session whose events go out as `transcript` messages and
whose finals become settings changes (spoken commands) or the prompt (`apply_transcript`).
Each call's decodes are biased towards `vocabulary` plus the call's recent typed prompts while
its `voice_vocabulary` setting is on (speakdraw/speech/vocabulary.py).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from server.pcm import SPEECH_RATE, PcmConverter
from speakdraw.settings import Settings
from speakdraw.speech import (
    SegmenterOptions,
    SileroVAD,
    SpeechToText,
    SpeechWorker,
    Transcriber,
    TranscriberOptions,
    TranscriptEvent,
    interpret,
    load_stt,
)
from speakdraw.speech.vocabulary import RecentPrompts, Vocabulary

log = logging.getLogger(__name__)

DROPPED_NOTICE_EVERY_S = 10.0


class SpeechObserver(Protocol):
    """Metrics hooks for speech (server/metrics.py implements them)."""

    def speech_final(self, stages_ms: dict[str, float]) -> None: ...

    def speech_dropped(self, seconds: float) -> None: ...


class AudioListener:
    def __init__(
        self,
        track: MediaStreamTrack,
        transcriber: Transcriber | None,
        on_event: Callable[[TranscriptEvent], Any] | None = None,
        observer: SpeechObserver | None = None,
        notify: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """`transcriber=None` builds nothing yet: use `attach()` (the factory needs `self.deliver` first)."""
        self.track = track
        self.transcriber = transcriber
        self.on_event = on_event
        self.frames = 0
        self.seconds = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()
        self._stopping = False
        self.failed = False  # the consumer raised: speech is off, the track is only drained
        self.observer = observer  # server.metrics.Metrics (speech_final, speech_dropped), when set up
        self.notify = notify  # sends a control message to the caller (dropped-audio notices)
        self.last_speech_ms: dict[str, float] = {}  # stage times of the newest final
        self._dropped_s = 0.0  # dropped audio already reported
        self._dropped_told_at = float("-inf")

    def attach(self, transcriber: Transcriber) -> None:
        self.transcriber = transcriber

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="speakdraw-audio")

    async def stop(self) -> None:
        """Stop reading and drop pending audio; no events are delivered after this returns."""
        self._stopping = True
        if self.transcriber is not None:
            self.transcriber.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    async def _run(self) -> None:
        converter = PcmConverter()
        try:
            while True:
                frame = await self.track.recv()
                self.frames += 1
                pcm = converter.convert(frame)
                self.seconds += len(pcm) / SPEECH_RATE
                if self.transcriber is not None and len(pcm):
                    self.transcriber.feed(pcm)
                    if self.transcriber.stats["dropped_s"] > self._dropped_s:
                        self._report_dropped()
        except MediaStreamError:  # the track ended: the last utterance still gets its final
            if self.transcriber is not None and not self._stopping:
                self.transcriber.flush()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failed = True
            log.exception("audio listener failed; speech is off for this call, the track is drained")
            await self._drain()

    def _report_dropped(self) -> None:
        """Live audio the speech thread could not keep up with: count it, tell the caller (at most every 10 s)."""
        total = self.transcriber.stats["dropped_s"]
        if self.observer is not None:
            self.observer.speech_dropped(total - self._dropped_s)
        self._dropped_s = total
        now = time.monotonic()
        if self.notify is not None and now - self._dropped_told_at >= DROPPED_NOTICE_EVERY_S:
            self._dropped_told_at = now
            self.notify(
                {
                    "type": "error",
                    "code": "speech_dropped",
                    "message": f"speech recognition fell behind: {total:.1f} s of your audio was skipped so far",
                }
            )

    async def _drain(self) -> None:
        """Read and discard until the track ends: an unread track's queue in aiortc grows without bound."""
        try:
            while True:
                await self.track.recv()
                self.frames += 1
        except MediaStreamError:
            pass

    # called on the speech thread
    def deliver(self, event: TranscriptEvent) -> None:
        loop = self._loop
        if loop is None or self._stopping or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._dispatch, event)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _dispatch(self, event: TranscriptEvent) -> None:
        if self._stopping or self.on_event is None:
            return
        try:
            result = self.on_event(event)
        except Exception:
            log.exception("transcript handler failed")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        if event.final and event.revision == 0 and event.stages:
            self._record_stages(event)

    def _record_stages(self, event: TranscriptEvent) -> None:
        """Stage times of one final (ms): eos, wait, decode from the speech thread; send = reported → sent."""
        stages = dict(event.stages)
        stages["send"] = max(0.0, time.monotonic() - event.emitted_at) * 1000.0
        stages["total"] = event.latency_s * 1000.0 + stages["send"]
        self.last_speech_ms = {k: round(v, 1) for k, v in stages.items()}
        if self.observer is not None:
            self.observer.speech_final(stages)

    def speech_stats(self) -> dict[str, Any]:
        """What the session's `stats` message adds: the newest final's stage times, audio dropped."""
        dropped = self.transcriber.stats["dropped_s"] if self.transcriber is not None else 0.0
        return {"speech_ms": dict(self.last_speech_ms), "speech_dropped_s": round(dropped, 2)}

    def stats(self) -> dict[str, float]:
        out = {"audio_frames": self.frames, "audio_s": round(self.seconds, 3)}
        if self.transcriber is not None:
            out.update(self.transcriber.stats)
        return out


@dataclass
class CallSpeech:
    """One call's speech state on the server: its recent typed prompts (bias) and the commands
    its finals applied, so a correction can take one back."""

    recent: RecentPrompts = field(default_factory=RecentPrompts)
    # utterance → (command, {field: (value before, value the command set)})
    applied: dict[int, tuple[str, dict[str, tuple[Any, Any]]]] = field(default_factory=dict)
    max_applied: int = 32


DEFAULT_PROMPT = Settings.model_fields["prompt"].default


def bias_text(session: Any, vocabulary: Vocabulary | None, state: CallSpeech) -> str:
    """The call's bias text now (speech thread): "" when off for the server or for this call."""
    current = session.pipeline.current
    if vocabulary is None or not current.voice_vocabulary:
        return ""
    prompt = current.prompt if current.prompt != DEFAULT_PROMPT else ""
    return vocabulary.prompt(state.recent.observe(prompt))


def _apply(session: Any, changes: dict[str, Any]) -> dict[str, Any] | None:
    try:
        current = session.update_settings(changes)
    except Exception as exc:  # commands are built within bounds; never let one kill the call
        log.warning("transcript change refused: %s", exc)
        return None
    session.send({"type": "settings", "settings": current})
    return current


def _undo(session: Any, state: CallSpeech, event: TranscriptEvent) -> bool:
    """A correction of an utterance that applied a command: put back what it changed (where unchanged since)."""
    done = state.applied.pop(event.utterance, None)
    if done is None:
        return False
    name, changes = done
    current = session.pipeline.current
    restore = {k: before for k, (before, after) in changes.items() if getattr(current, k) == after}
    heard = event.text.strip()
    what = f"heard {heard!r}" if heard else "heard nothing it trusts"
    session.send(
        {
            "type": "command",
            "command": "undo",
            "undone": name,
            "description": f"{name!r} taken back: a closer listen {what}",
            "changes": restore,
            "utterance": event.utterance,
        }
    )
    if restore:
        _apply(session, restore)
    return True


def apply_transcript(session: Any, event: TranscriptEvent, state: CallSpeech | None = None) -> None:
    """Send the `transcript` message; a final then becomes a command or the prompt.

    `session` needs `send(dict)`, `update_settings(partial) -> dict` and
    `pipeline.current` (server.session.Session has all three). A command is echoed as
    `{"type":"command","command","description","changes","utterance"}`; any change is followed by
    the usual `{"type":"settings","settings":{...}}`. A correction (`revised`) of an utterance
    whose final was a prompt updates the prompt only; of one whose final applied a command, it
    first undoes that command (`{"type":"command","command":"undo","undone":NAME,...}`), then
    applies what the correction says (another command, or the prompt).
    """
    state = state if state is not None else CallSpeech()
    session.send(event.message())
    if not event.final:
        return
    undone = _undo(session, state, event) if event.revision else False
    if not event.text.strip():
        return
    result = interpret(event.text, session.pipeline.current, command=event.command or None)
    if event.revision and not undone and result.kind != "prompt":
        return  # a correction of a prompt only ever fixes the prompt: a command is never applied twice
    if result.kind == "command":
        session.send(
            {
                "type": "command",
                "command": result.command,
                "description": result.description,
                "changes": result.changes,
                "utterance": event.utterance,
            }
        )
        before = session.pipeline.current
        state.applied[event.utterance] = (
            result.command,
            {k: (getattr(before, k), v) for k, v in result.changes.items()},
        )
        while len(state.applied) > state.max_applied:
            state.applied.pop(next(iter(state.applied)))
    elif result.kind == "prompt":
        state.recent.spoken(result.changes.get("prompt", ""))
    if result.changes:
        _apply(session, result.changes)


class SpeechListenerFactory:
    """`factory(session, track) -> AudioListener` for `AppState.speech_factory`.

    It holds no thread of its own: `worker` (the one speech thread, owned by the server)
    is kept as an attribute so the app can `close()` it on shutdown.
    """

    def __init__(
        self,
        stt: SpeechToText,
        vad: SileroVAD,
        worker: SpeechWorker,
        options: TranscriberOptions | None = None,
        on_event: Callable[..., Any] = apply_transcript,
        vocabulary: Vocabulary | None = None,
    ) -> None:
        """`vocabulary`: what decodes are biased towards (None = no biasing, `--no-stt-vocabulary`)."""
        options = options if options is not None else speech_options()
        self.stt, self.vad, self.worker, self.options, self.on_event = stt, vad, worker, options, on_event
        self.vocabulary = vocabulary

    def __call__(self, session: Any, track: MediaStreamTrack, observer: SpeechObserver | None = None) -> AudioListener:
        """A listener for `session`'s mic `track` (the session needs `send`; see `apply_transcript`)."""
        on_event, state, vocabulary = self.on_event, CallSpeech(), self.vocabulary
        if on_event is apply_transcript:
            handler = lambda event: apply_transcript(session, event, state)  # noqa: E731
        else:
            handler = lambda event: on_event(session, event)  # noqa: E731
        listener = AudioListener(track, None, handler, observer, session.send)
        bias = (lambda: bias_text(session, vocabulary, state)) if vocabulary is not None else None
        transcriber = Transcriber(
            self.stt, self.vad, listener.deliver, worker=self.worker, options=self.options, bias=bias
        )
        listener.attach(transcriber)
        return listener

    def close(self) -> None:
        """Stop the speech thread (joins it; a transcription in progress finishes first)."""
        self.worker.close()


speech_listener_factory = SpeechListenerFactory  # `speech_listener_factory(stt, vad, worker)`: the name callers use


LEGACY_OPTIONS = TranscriberOptions(
    partial_interval_s=0.7,
    windowed=False,
    careful="never",
    segmenter=SegmenterOptions(end_silence_ms=500.0, end_silence_after_pause_ms=500.0),
)


def speech_options() -> TranscriberOptions | None:
    """`SPEAKDRAW_SPEECH_MODE=legacy`: the pre-issue-16 path (30 s decodes, 500 ms rule), for `bench/speech.py`."""
    mode = os.environ.get("SPEAKDRAW_SPEECH_MODE", "fast")
    if mode not in ("fast", "legacy"):
        raise ValueError(f"SPEAKDRAW_SPEECH_MODE must be fast or legacy, not {mode!r}")
    return LEGACY_OPTIONS if mode == "legacy" else None


def load_vocabulary(enabled: bool = True, path: str | None = None) -> Vocabulary | None:
    """`--stt-vocabulary FILE` / `--no-stt-vocabulary`: the bias vocabulary for every call (None = off)."""
    if not enabled:
        return None
    return Vocabulary.from_file(path)


def load_speech(kind: str, model: str | None, device: str = "auto") -> tuple[SpeechToText | None, SileroVAD | None]:
    """STT + VAD for `--stt/--stt-model` (blocking: call it from a worker thread at start-up).

    Returns (None, None) for `--stt off`; raises `speakdraw.speech.STTUnavailable` or
    `speakdraw.weights.WeightsUnavailable` when weights are missing.
    """
    stt = load_stt(kind, model, device)
    if stt is None:
        return None, None
    return stt, SileroVAD()
