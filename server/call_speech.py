"""The call's microphone → live transcripts: read the aiortc audio track, feed the Transcriber.

`AudioListener` is an asyncio task that awaits `track.recv()` continuously (so aiortc's
own frame queue never grows), resamples each frame to 16 kHz mono int16 with PyAV and
hands it to `speakdraw.speech.Transcriber.feed`, which only appends to a bounded
buffer: no model code ever runs on the event loop. The transcriber reports from the
shared speech thread; the listener hops each event back onto the loop with
`call_soon_threadsafe` and gives it to `on_event` (a callable or a coroutine function).

`speech_listener_factory(...)` is what `AppState.speech_factory` holds: it
builds one listener per session whose events go out as `transcript` messages and
whose finals become settings changes (spoken commands) or the prompt
(`apply_transcript`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from speakdraw.speech import (
    SileroVAD,
    SpeechToText,
    SpeechWorker,
    Transcriber,
    TranscriberOptions,
    TranscriptEvent,
    default_worker,
    interpret,
    load_stt,
)

log = logging.getLogger(__name__)


class AudioListener:
    def __init__(
        self,
        track: MediaStreamTrack,
        transcriber: Transcriber | None,
        on_event: Callable[[TranscriptEvent], Any] | None = None,
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
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        try:
            while True:
                frame = await self.track.recv()
                self.frames += 1
                for out in resampler.resample(frame):
                    pcm = out.to_ndarray().reshape(-1)
                    self.seconds += len(pcm) / 16000
                    if self.transcriber is not None:
                        self.transcriber.feed(pcm)
        except MediaStreamError:  # the track ended: the last utterance still gets its final
            if self.transcriber is not None and not self._stopping:
                self.transcriber.flush()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("audio listener failed; speech is off for this call")

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

    def stats(self) -> dict[str, float]:
        out = {"audio_frames": self.frames, "audio_s": round(self.seconds, 3)}
        if self.transcriber is not None:
            out.update(self.transcriber.stats)
        return out


def apply_transcript(session: Any, event: TranscriptEvent) -> None:
    """Send the `transcript` message; a final then becomes a command or the prompt.

    `session` needs `send(dict)`, `update_settings(partial) -> dict` and
    `pipeline.current` (server.session.Session has all three). A command is echoed as
    `{"type":"command","command","description","changes"}`; any change is followed by
    the usual `{"type":"settings","settings":{...}}`.
    """
    session.send(event.message())
    if not event.final or not event.text.strip():
        return
    result = interpret(event.text, session.pipeline.current)
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
    if result.changes:
        try:
            current = session.update_settings(result.changes)
        except Exception as exc:  # commands are built within bounds; never let one kill the call
            log.warning("transcript change refused: %s", exc)
            return
        session.send({"type": "settings", "settings": current})


def speech_listener_factory(
    stt: SpeechToText,
    vad: SileroVAD,
    worker: SpeechWorker | None = None,
    options: TranscriberOptions | None = None,
    on_event: Callable[[Any, TranscriptEvent], Any] = apply_transcript,
) -> Callable[[Any, MediaStreamTrack], AudioListener]:
    """`factory(session, track) -> AudioListener` for `AppState.speech_factory`."""
    worker = worker or default_worker()

    def factory(session: Any, track: MediaStreamTrack) -> AudioListener:
        listener = AudioListener(track, None, lambda event: on_event(session, event))
        listener.attach(Transcriber(stt, vad, listener.deliver, worker=worker, options=options))
        return listener

    return factory


def load_speech(kind: str, model: str | None, device: str = "auto") -> tuple[SpeechToText | None, SileroVAD | None]:
    """STT + VAD for `--stt/--stt-model` (blocking: call it from a worker thread at start-up).

    Returns (None, None) for `--stt off`; raises `speakdraw.speech.STTUnavailable` or
    `speakdraw.weights.WeightsUnavailable` when weights are missing.
    """
    stt = load_stt(kind, model, device)
    if stt is None:
        return None, None
    return stt, SileroVAD()
