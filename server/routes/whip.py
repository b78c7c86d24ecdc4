"""WHIP ingest (RFC 9725) and WHEP playback, so OBS or any WHIP sender can feed a session and any WHEP player watch.

- `POST /whip` (`application/sdp` offer) → `201`, answer SDP, `Location: /whip/{session_id}`. The call runs
  with default settings, or `?settings=<JSON>`. `DELETE /whip/{session_id}` ends it and its WHEP viewers.
- `POST /whep/{session_id}` (recvonly offer) → `201`, answer, `Location: /whep/{session_id}/{viewer}`;
  `DELETE` that location ends the viewer. Any session can be watched (a page call or a WHIP one).
The token goes as `Authorization: Bearer` (server/auth.py checks these paths like `/api/*`); errors are
the JSON errors. Non-trickle: answers carry every candidate, PATCH (trickle/restart) answers 405.
A viewer gets the session's output frames through `TransformedVideoTrack.listeners` (as MJPEG does), so
viewers never take frames from the call itself; a WHIP session has no sender of its own to pull
them, so a pump task (one of the session's tasks) does. Each viewer's encoder starts with a keyframe,
and PLI/FIR get one. Negotiation (peer connection, answer, errors) is server/negotiation.py's, as for
`POST /api/offer`; a viewer closed with its session is closed by a task of the app's task set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid

from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame
from pydantic import ValidationError

from server import ice, negotiation
from server.errors import json_error
from server.mailbox import Mailbox, MailboxClosed
from server.negotiation import OfferRefused
from server.routes.sessions import start_session
from server.session import Session
from server.state import STATE
from server.tracks import OutFrame
from speakdraw.settings import Settings

log = logging.getLogger(__name__)

SDP_TYPE = "application/sdp"
VIEWERS = web.AppKey("whep_viewers", dict)  # session_id -> {viewer_id: WhepViewer}
MAX_VIEWERS_PER_SESSION = 8
FIRST_FRAME_TIMEOUT_S = 30.0


class RelayTrack(MediaStreamTrack):
    """A viewer's copy of a session's output: newest frame wins (1-slot mailbox), ends with the session.

    Each frame it hands its sender is its own, made from the output's RGB: the call's own frame is being encoded
    by the call's sender, and two encoders converting one frame at once share its one colour converter (a crash
    in libswscale; server/tracks.py `OutFrame`)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.inbox: Mailbox[OutFrame] = Mailbox()

    def offer_frame(self, out: OutFrame) -> None:
        self.inbox.put(out)

    def end(self) -> None:
        self.inbox.close()

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            out = await self.inbox.get()
        except MailboxClosed:
            self.stop()
            raise MediaStreamError from None
        if out.rgb is None:  # no pixels of its own (a test's OutFrame): the frame as it is
            return out.frame
        frame = VideoFrame.from_ndarray(out.rgb, format="rgb24")
        frame.pts = out.frame.pts
        if out.frame.time_base is not None:
            frame.time_base = out.frame.time_base
        return frame


class WhepViewer:
    def __init__(self, session: Session, pc: RTCPeerConnection, track: RelayTrack) -> None:
        self.id = uuid.uuid4().hex
        self.session = session
        self.pc = pc
        self.track = track

    async def close(self) -> None:
        listeners = self.session.output_track.listeners if self.session.output_track is not None else []
        if self.track.offer_frame in listeners:
            listeners.remove(self.track.offer_frame)
        self.track.end()
        await ice.close_peer(self.pc)


async def _read_sdp(request: web.Request) -> str | web.Response:
    if request.content_type != SDP_TYPE:
        return json_error(415, "unsupported_media_type", f"send the offer as {SDP_TYPE}")
    limit = request.app[STATE].config.max_offer_bytes
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        return json_error(413, "too_large", f"an offer is at most {limit} bytes")
    try:
        sdp = body.decode()
    except UnicodeDecodeError:
        return json_error(400, "bad_sdp", "the offer is not UTF-8 text")
    if not sdp.startswith("v=0"):
        return json_error(400, "bad_sdp", "the body is not an SDP offer (it must start with v=0)")
    return sdp


def _sdp_created(sdp: str, location: str) -> web.Response:
    return web.Response(status=201, text=sdp, content_type=SDP_TYPE, headers={"Location": location})


async def _pump(session: Session) -> None:
    """A WHIP call has no WebRTC sender pulling its output: pull it here so listeners (WHEP, MJPEG) see it."""
    with contextlib.suppress(MediaStreamError):
        while session.output_track is not None:
            await session.output_track.recv()


async def whip_post(request: web.Request) -> web.Response:
    state = request.app[STATE]
    sdp = await _read_sdp(request)
    if isinstance(sdp, web.Response):
        return sdp
    try:
        settings = Settings().updated(json.loads(request.query.get("settings") or "{}"))
    except (ValidationError, TypeError, ValueError, RecursionError) as exc:
        return json_error(400, "invalid_settings", str(exc))
    try:
        session, answer, _ = await start_session(
            state, sdp, settings, on_closed=lambda s: _session_closed(request.app, state, s)
        )
    except OfferRefused as exc:
        return exc.response
    session.tasks.spawn(_pump(session), name=f"whip pump {session.id[:8]}")
    return _sdp_created(answer.sdp, f"/whip/{session.id}")


def _session_closed(app: web.Application, state, session: Session) -> None:
    state.sessions.pop(session.id, None)
    for viewer in list(app[VIEWERS].pop(session.id, {}).values()):
        state.tasks.spawn(viewer.close(), name=f"close whep viewer {viewer.id[:8]}")


async def whip_delete(request: web.Request) -> web.Response:
    session = request.app[STATE].sessions.get(request.match_info["id"])
    if session is None:
        return json_error(404, "unknown_session", "no such WHIP session")
    await session.close()
    return web.Response(status=200)


async def whep_post(request: web.Request) -> web.Response:
    state = request.app[STATE]
    session = state.sessions.get(request.match_info["session_id"])
    if session is None:
        return json_error(404, "unknown_session", "no such session")
    sdp = await _read_sdp(request)
    if isinstance(sdp, web.Response):
        return sdp
    viewers = request.app[VIEWERS].setdefault(session.id, {})
    if len(viewers) >= MAX_VIEWERS_PER_SESSION:
        return json_error(503, "too_many_viewers", "this session has its maximum of viewers", {"Retry-After": "10"})
    if session.output_track is None:
        return json_error(409, "no_output", "this session has no video output yet")
    pc = negotiation.new_peer_connection(state.config)
    track = RelayTrack()
    pc.addTrack(track)
    viewer = WhepViewer(session, pc, track)

    async def gone() -> None:
        viewers.pop(viewer.id, None)
        await viewer.close()

    negotiation.on_connection_state(pc, gone, f"whep viewer {viewer.id[:8]}")
    try:
        answer = await negotiation.answer(pc, sdp)
    except OfferRefused as exc:
        await ice.close_peer(pc)
        return exc.response
    except BaseException:
        await ice.close_peer(pc)
        raise
    if session.closed.is_set():
        await ice.close_peer(pc)
        return json_error(404, "unknown_session", "the session ended")
    viewers[viewer.id] = viewer
    session.output_track.listeners.append(track.offer_frame)
    return _sdp_created(answer.sdp, f"/whep/{session.id}/{viewer.id}")


async def whep_delete(request: web.Request) -> web.Response:
    viewers = request.app[VIEWERS].get(request.match_info["session_id"], {})
    viewer = viewers.pop(request.match_info["viewer"], None)
    if viewer is None:
        return json_error(404, "unknown_viewer", "no such WHEP viewer")
    await viewer.close()
    return web.Response(status=200)


async def _patch(request: web.Request) -> web.Response:
    return json_error(405, "method_not_allowed", "trickle ICE and ICE restarts are not supported: send a new offer")


async def _close_viewers(app: web.Application) -> None:
    viewers = [v for per in app[VIEWERS].values() for v in per.values()]
    app[VIEWERS].clear()
    await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)


def setup(app: web.Application) -> None:
    app[VIEWERS] = {}
    app.router.add_post("/whip", whip_post)
    app.router.add_delete("/whip/{id}", whip_delete)
    app.router.add_patch("/whip/{id}", _patch)
    app.router.add_post("/whep/{session_id}", whep_post)
    app.router.add_delete("/whep/{session_id}/{viewer}", whep_delete)
    app.router.add_patch("/whep/{session_id}/{viewer}", _patch)
    app.on_shutdown.append(_close_viewers)
