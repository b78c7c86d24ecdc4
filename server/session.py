"""One call: its RTCPeerConnection, `control` data channel, pipeline and media tasks.

Everything a session owns is released by `close()`, whichever way the call ends:
hang-up (DELETE), ICE/DTLS failure, the browser going away, or server shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from server import control
from server.tracks import TransformedVideoTrack, VideoProcessor
from speakdraw.pipeline import Pipeline

log = logging.getLogger(__name__)


class Session:
    _peer_connections: weakref.WeakSet[RTCPeerConnection] = weakref.WeakSet()

    @classmethod
    def live_peer_connections(cls) -> int:
        """Peer connections not yet closed (a leak shows here)."""
        return sum(1 for pc in cls._peer_connections if pc.connectionState != "closed")

    def __init__(self, app_state: Any, pipeline: Pipeline, on_closed: Callable[[Session], None]) -> None:
        self.id = uuid.uuid4().hex
        self.state = app_state
        self.config = app_state.config
        self.pipeline = pipeline
        self._on_closed = on_closed
        ice = [RTCIceServer(urls=url) for url in self.config.ice_servers]
        # An explicit (possibly empty) list: aiortc would otherwise reach out to a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        Session._peer_connections.add(self.pc)
        self.channel = None
        self.processor: VideoProcessor | None = None
        self.output_track: TransformedVideoTrack | None = None
        self.audio = None  # server.call_speech.AudioListener when speech is on
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        self.closed = asyncio.Event()
        self.created = time.monotonic()
        self._wire_events()

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
                reply = control.handle_message(message, self, self.config.max_message_bytes)
                if reply is not None:
                    self.send(reply)

            self.send(self.status_message())

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and self.processor is None:
                observer = getattr(self.state, "observer", None)  # server.metrics, when set up
                self.processor = VideoProcessor(track, self.pipeline, self.state.video_executor, observer)
                self.output_track = TransformedVideoTrack(self.processor)
                pc.addTrack(self.output_track)
            elif track.kind == "audio" and self.audio is None:
                self._start_audio(track)
            else:
                self._spawn(self._drain(track))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("session %s: connection %s", self.id[:8], pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await self.close()

    def _start_audio(self, track: MediaStreamTrack) -> None:
        """Speech on: an AudioListener reads the track; off: drain it so aiortc's queue never grows."""
        factory = getattr(self.state, "audio_listener_factory", None)
        if factory is None:
            self.audio = True
            self._spawn(self._drain(track))
            return
        self.audio = factory(self, track)
        self.audio.start()

    async def _drain(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
        except MediaStreamError:
            pass

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- signaling --------------------------------------------------------------------
    async def accept(self, sdp: str) -> RTCSessionDescription:
        """Offer in, complete answer (all ICE candidates gathered) out."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if self.processor is None:
            raise ValueError("the offer has no video track to transform")
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        self.processor.start()
        self._spawn(self._stats_loop())
        return self.pc.localDescription

    # ---- control channel --------------------------------------------------------------
    def update_settings(self, partial: dict[str, Any]) -> dict[str, Any]:
        return self.pipeline.update(partial).model_dump()

    def send(self, message: dict[str, Any]) -> None:
        observer = getattr(self.state, "observer", None)
        if observer is not None:
            observer.message_sent(message)  # counts errors by code and transcripts
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            try:
                channel.send(json.dumps(message))
            except Exception:  # a dying SCTP transport must not kill the caller
                log.debug("session %s: send failed", self.id[:8], exc_info=True)

    def status_message(self, message: str | None = None) -> dict[str, Any]:
        engine = self.state.engine_name()
        ready = self.state.engine_ready
        if message is None:
            warnings = self.state.warnings
            message = "; ".join(warnings) if warnings else ("ready" if ready else f"loading {engine}")
        return {"type": "status", "engine": engine, "ready": ready, "message": message}

    def stats_message(self) -> dict[str, Any]:
        p = self.processor
        if p is None:
            return {"type": "stats", "fps_in": 0.0, "fps_out": 0.0, "dropped": 0, "latency_ms": {}, "queue_age_ms": 0}
        s = p.stats
        speech = getattr(self.audio, "speech_stats", None)  # server/call_speech.py: speech_ms, speech_dropped_s
        return (speech() if speech is not None else {}) | {
            "type": "stats",
            "fps_in": round(s.fps_in.rate(), 2),
            "fps_out": round(s.fps_out.rate(), 2),
            "dropped": p.dropped,
            "latency_ms": {
                **{k: round(v, 2) for k, v in s.last_timings_ms.items()},
                "encode": round(s.last_encode_ms, 2),
            },
            "queue_age_ms": round(s.last_queue_age_ms, 2),
            "shown_age_ms": round(s.last_shown_age_ms, 2),
            "frames_in": s.frames_in,
            "frames_out": s.frames_out,
            "errors": s.errors,
            "server_time": time.time() * 1000.0,
        }

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.send(self.stats_message())

    # ---- teardown ---------------------------------------------------------------------
    async def close(self) -> None:
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        try:
            if self.processor is not None:
                await self.processor.stop()
            if self.audio is not None and hasattr(self.audio, "stop"):
                await self.audio.stop()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.output_track is not None:
                self.output_track.stop()
            await self.pc.close()
            self.pipeline.close()
        finally:
            self._on_closed(self)
            self.closed.set()
