"""Calls that lost their connection are kept for `--resume-window` seconds, so a phone can rejoin.

A phone switching from Wi-Fi to cellular loses its ICE path; aiortc does not do ICE restarts,
so the page rejoins with a new offer carrying `resume: <session_id>`. The new call takes over
the old one's settings (prompt, seed...), image prompt and utterance counter, and keeps its
session id (MJPEG and WHEP viewers' URLs stay valid). The recurrent matting state and the
stream-batch buffers start fresh: they describe frames of the lost connection.
The old call may still look alive here (the server notices a dead path only after ~30 s of
failed consent checks), so a resume also takes over a live session of that id. A rejoin whose
offer fails puts the lost call back: the next rejoin can still take it.

The image prompt goes through the new pipeline's change queue (`Pipeline.adopt_image_prompt`), and
only to a pipeline of the engine that encoded it. Utterance numbers continue once the call's speech
listener exists (`continue_utterances`, run by server/audio_gate.py): speech may load after the rejoin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from speakdraw.settings import Settings


@dataclass
class LostCall:
    session_id: str
    settings: dict[str, Any]
    image_prompt: Any  # the engine's encoded image prompt, or None
    engine: Any  # the engine that encoded it (an encoded image prompt only fits its own engine)
    next_utterance: int
    lost_at: float


def _segmenter(session: Any) -> Any | None:
    """The call's utterance segmenter (None while it has no speech listener)."""
    transcriber = getattr(getattr(session, "audio", None), "transcriber", None)
    return getattr(transcriber, "_segmenter", None)


def _next_utterance(session: Any) -> int:
    """The id the call's next utterance would get (where a rejoin continues)."""
    segmenter = _segmenter(session)
    spoken = segmenter.next_utterance if segmenter is not None else 0
    return max(spoken, getattr(session, "first_utterance", 0))


def snapshot(session: Any, now: float | None = None) -> LostCall:
    pipeline = session.pipeline
    return LostCall(
        session_id=session.id,
        settings=pipeline.current.model_dump(),
        image_prompt=pipeline.next_image_prompt,  # one posted just now is still queued for the next frame
        engine=pipeline.next_engine,
        next_utterance=_next_utterance(session),
        lost_at=time.monotonic() if now is None else now,
    )


class ResumeStore:
    """Lost calls by session id, each kept `window_s` seconds; bounded by `max_calls` (oldest dropped)."""

    def __init__(self, window_s: float, max_calls: int = 64) -> None:
        self.window_s = window_s
        self.max_calls = max_calls
        self._lost: dict[str, LostCall] = {}

    def __len__(self) -> int:
        self._expire()
        return len(self._lost)

    def _expire(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for sid in [s for s, c in self._lost.items() if now - c.lost_at > self.window_s]:
            del self._lost[sid]

    def __contains__(self, session_id: object) -> bool:
        """Whether a lost call of that id is kept (admission never refuses its rejoin for capacity)."""
        self._expire()
        return session_id in self._lost

    def remember(self, session: Any) -> None:
        """Keep a call whose connection failed (not one that hung up)."""
        if self.window_s <= 0:
            return
        self._expire()
        self._lost[session.id] = snapshot(session)
        while len(self._lost) > self.max_calls:
            del self._lost[next(iter(self._lost))]

    def keep(self, lost: LostCall) -> None:
        """Put back a lost call whose rejoin failed (its window still counts from when it was lost)."""
        if self.window_s > 0:
            self._lost[lost.session_id] = lost

    def take(self, session_id: str, now: float | None = None) -> LostCall | None:
        self._expire(now)
        return self._lost.pop(session_id, None)


async def claim(state: Any, session_id: Any) -> LostCall | None:
    """What a `resume` offer takes over: a lost call in the window, or a live session of that id (closed here)."""
    if not isinstance(session_id, str) or not session_id:
        return None
    store = state.resume_store
    live = state.sessions.get(session_id)
    if live is not None:
        lost = snapshot(live)
        live.resumed_away = True  # its close must not store it again
        await live.close()
        store.take(session_id)
        return lost
    return store.take(session_id)


def apply(lost: LostCall, session: Any) -> None:
    """Before the new session is registered: it takes the lost call's id, image prompt and utterance counter."""
    session.id = lost.session_id
    session.first_utterance = lost.next_utterance
    if lost.image_prompt is not None and session.pipeline.next_engine is lost.engine:
        session.pipeline.adopt_image_prompt(lost.image_prompt)


def continue_utterances(session: Any) -> None:
    """Once the call's speech listener exists: its utterance numbers go on from the lost call's."""
    segmenter = _segmenter(session)
    if segmenter is not None and session.first_utterance > segmenter.next_utterance:
        segmenter.next_utterance = session.first_utterance


def settings_of(lost: LostCall) -> Settings:
    return Settings().updated(lost.settings)
