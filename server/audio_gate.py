"""A call's microphone track until speech can take it, and every track nobody else reads.

aiortc queues the frames of a remote track until something reads them, without bound, so every track a
call receives is read from its start: the mic by `listen` (its frames are dropped until the speech models
are loaded, which may be after the call joined; then the track goes to a speech listener,
server/call_speech.py), any other track by `drain`. With speech off, or failed to load, the mic is drained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from server import resume

if TYPE_CHECKING:
    from server.session import Session


async def drain(track: MediaStreamTrack) -> None:
    """Read and drop frames until the track ends."""
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass


async def listen(session: Session, track: MediaStreamTrack) -> None:
    """Drop mic frames until speech is loaded, then hand the track to the call's speech listener."""
    state = session.state
    try:
        while state.speech_factory is None:
            if state.engine_ready and state.stt is None:  # speech is off or failed: just drain
                await drain(track)
                return
            await track.recv()
    except MediaStreamError:
        return
    session.audio = state.speech_factory(session, track, state.observer)
    resume.continue_utterances(session)  # a rejoined call's utterance numbers go on
    session.audio.start()
