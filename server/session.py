"""One call: signaling (its RTCPeerConnection), the `control` data channel, and teardown.

What a call does lives beside it: the peer connection and the answer come from server/negotiation.py
(shared with WHIP and WHEP), the video path from server/tracks.py, the mic from server/audio_gate.py and
server/call_speech.py, the `stats` message from server/call_stats.py, failing frames from server/faults.py.
Every task the call starts is in its `tasks` (server/tasks.py).

Everything a session owns is released by `close()`, whichever way the call ends: hang-up
(DELETE), ICE/DTLS failure, the browser going away, its camera track ending, no connection
within `connect_timeout_s`, or server shutdown. Teardown runs in a fixed order, each step in
its own `finally`, and the engine session is closed on the device thread that runs its frames.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc import MediaStreamTrack, RTCSessionDescription

from server import audio_gate, call_stats, control, ice, negotiation, netstats
from server.faults import FrameFaults
from server.governor import CallGovernor
from server.tasks import TaskSet
from server.tracks import FrameRelay, TransformedVideoTrack
from speakdraw.pipeline import Pipeline

if TYPE_CHECKING:  # typing only: server/state.py imports this module
    from server.call_speech import AudioListener
    from server.state import AppState

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 20.0
PIPELINE_CLOSE_WAIT_S = 1.0


class Session:
    def __init__(
        self,
        app_state: AppState,
        pipeline: Pipeline,
        on_closed: Callable[[Session], None],
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.id = f"{app_state.config.worker_id}-{uuid.uuid4().hex}" if app_state.config.worker_id else uuid.uuid4().hex
        self.state = app_state
        self.config = app_state.config
        self.pipeline = pipeline
        self._on_closed = on_closed
        self.pc = negotiation.new_peer_connection(self.config)
        self.resumed_away = False  # a `resume` offer took this call over: its close must not keep it again
        self.first_utterance = 0  # a rejoined call's utterance numbers go on from here (server/resume.py)
        self.channel = None
        self.relay: FrameRelay | None = None
        self.output_track: TransformedVideoTrack | None = None
        self.audio: AudioListener | None = None  # when speech is on and loaded
        self._audio_track: MediaStreamTrack | None = None
        self.faults = FrameFaults(self)
        self.governor = CallGovernor(self, app_state.workers.capacity)  # send hints, working size (server/governor.py)
        self.tasks = TaskSet(f"session {self.id[:8]}")  # every task of this call; close() cancels and awaits them
        self._closing = False
        self.closed = asyncio.Event()
        self.created = time.monotonic()
        self.connect_timeout_s = connect_timeout_s
        self._wire_events()

    @property
    def hint(self) -> dict[str, Any] | None:
        """The last `send` message (server/governor.py)."""
        return self.governor.hint

    # ---- wiring -----------------------------------------------------------------------
    def _wire_events(self) -> None:
        pc = self.pc

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            if channel.label != "control":
                return
            self.channel = channel

            @channel.on("message")
            def on_message(message) -> None:
                try:
                    reply = control.handle_message(message, self, self.config.max_message_bytes)
                except Exception as exc:  # the boundary: never let a message end the call
                    log.exception("session %s: control message failed", self.id[:8])
                    reply = control.error("internal_error", f"the server could not take this message: {exc}")
                if reply is not None:
                    self.send(reply)

            self.send(self.status_message())
            if self.hint is not None:
                self.send(self.hint)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and self.relay is None:
                self.relay = FrameRelay(
                    track, self.pipeline, self.state.workers.runner, self.state.observer, self.faults
                )
                self.output_track = TransformedVideoTrack(self.relay)
                pc.addTrack(self.output_track)
            elif track.kind == "audio" and self._audio_track is None:
                self._audio_track = track
                self._spawn(audio_gate.listen(self, track))
            else:
                self._spawn(audio_gate.drain(track))

        negotiation.on_connection_state(pc, lambda: self.close(lost=True), f"session {self.id[:8]}")

    def _spawn(self, coro) -> asyncio.Task:
        return self.tasks.spawn(coro)

    # ---- signaling --------------------------------------------------------------------
    async def accept(self, sdp: str) -> RTCSessionDescription:
        """Offer in, complete answer (all ICE candidates gathered) out; OfferRefused (server/negotiation.py)."""

        def has_video() -> None:
            if self.relay is None:
                raise ValueError("the offer has no video track to transform")

        answer = await negotiation.answer(self.pc, sdp, has_video)
        assert self.relay is not None
        self.relay.start()
        self._spawn(self._stats_loop())
        self._spawn(self._watch())
        self.governor.update()
        return answer

    async def _watch(self) -> None:
        """Close the call when it never connects, or when its camera track ends."""
        assert self.relay is not None
        try:
            await asyncio.wait_for(self._connected(), self.connect_timeout_s)
        except asyncio.TimeoutError:
            log.info("session %s: not connected after %.0f s, closing", self.id[:8], self.connect_timeout_s)
            self._spawn_close()
            return
        await self.relay.ended.wait()
        log.info("session %s: camera track ended, closing", self.id[:8])
        self._spawn_close(lost=True)

    async def _connected(self) -> None:
        while self.pc.connectionState != "connected":
            await asyncio.sleep(0.1)

    def _spawn_close(self, lost: bool = False) -> None:
        # the app's task set, not the call's: close() cancels the call's own tasks (app shutdown awaits it)
        self.state.tasks.spawn(self.close(lost=lost), name=f"close session {self.id[:8]}")

    def models_ready(self) -> None:
        """The models finished loading: switch at the next frame, and say so."""
        self.pipeline.set_engine(self.state.current_engine(), self.state.matting)
        self.send(self.status_message())

    # ---- control channel --------------------------------------------------------------
    def update_settings(self, partial: dict[str, Any]) -> dict[str, Any]:
        settings = self.pipeline.update(partial).model_dump()
        self.faults.settings_changed()
        if {"width", "height"} & set(partial):
            self.governor.update(force=True)
        return settings

    def send(self, message: dict[str, Any]) -> None:
        observer = self.state.observer
        if observer is not None:
            observer.message_sent(message)  # counts errors by code and transcripts
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            try:
                channel.send(json.dumps(message))
            except Exception:  # a dying SCTP transport must not kill the caller
                log.debug("session %s: send failed", self.id[:8], exc_info=True)

    def status_message(self, message: str | None = None) -> dict[str, Any]:
        engine = self.pipeline.next_engine.name if self.state.engine_ready else self.state.engine_name()
        ready = self.state.engine_ready
        if message is None:
            warnings = self.state.warnings
            message = "; ".join(warnings) if warnings else ("ready" if ready else f"loading {engine}")
        return {"type": "status", "engine": engine, "ready": ready, "message": message}

    def stats_message(self) -> dict[str, Any]:
        return call_stats.stats_message(self)  # server/call_stats.py

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            network = await netstats.summary(self.pc)  # loss both ways (server/netstats.py)
            self.governor.tick(network)  # capacity, working size, hint, round trip (server/governor.py)
            message = self.stats_message()
            message["network"] = network
            self.send(message)

    # ---- teardown ---------------------------------------------------------------------
    async def close(self, lost: bool = False) -> None:
        """Teardown in a fixed order; a step that fails is logged and the next one still runs.

        `lost`: the connection went away without a hang-up (failed, closed, the camera track ended): the call's
        state is kept for `--resume-window` seconds so the page can rejoin it (server/resume.py)."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        if lost and not self.resumed_away:
            try:
                self.state.resume_store.remember(self)
            except Exception:
                log.exception("session %s: could not keep it for a resume", self.id[:8])
        try:
            for step in (
                self._stop_video,
                self._stop_audio,
                self.tasks.close,
                self._close_peer,
                self._close_pipeline,
            ):
                try:
                    await step()
                except Exception:
                    log.exception("session %s: %s failed during teardown", self.id[:8], step.__name__)
        finally:
            self._on_closed(self)
            self.closed.set()
            workers = self.state.workers
            workers.capacity.calls_changed(workers.runner.active_calls())
            self.state.memory.call_ended(len(self.state.sessions))  # freed, and back to the OS (server/memory.py)

    async def _stop_video(self) -> None:
        if self.relay is not None:
            await self.relay.stop()  # leaves the runner: no new frame of this call starts

    async def _stop_audio(self) -> None:
        if self.audio is not None:
            await self.audio.stop()

    async def _close_peer(self) -> None:
        if self.output_track is not None:
            self.output_track.stop()
        await ice.close_peer(self.pc)  # bounded: a dead TURN server must not hold the close

    async def _close_pipeline(self) -> None:
        """On the device thread, after any step that still holds this call's frame. A long step in flight
        (seconds of CPU diffusion) is not waited for past `PIPELINE_CLOSE_WAIT_S`: the close stays queued
        behind it, and a server shutting down cancels it with the thread."""
        runner = self.state.workers.runner
        try:
            await asyncio.wait_for(asyncio.shield(runner.run(self.pipeline.close)), PIPELINE_CLOSE_WAIT_S)
        except asyncio.TimeoutError:
            log.info("session %s: engine session closes after the step in flight", self.id[:8])
        except RuntimeError:  # the runner is already shut down: nothing else can run its frames now
            self.pipeline.close()
