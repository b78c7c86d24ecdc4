"""One negotiation path for every peer connection the server answers: the page's offer, WHIP and WHEP.

- `new_peer_connection(config)` builds it with the configured ICE servers (`--ice-server`, `--turn-url`
  with fresh TURN credentials; never aiortc's public STUN default) and the codec preference, which must
  be in place before the offer is applied (server/codecs.py); `/healthz` `peer_connections` counts it.
- `answer(pc, sdp)` applies the offer and returns the complete answer (non-trickle: every ICE candidate
  gathered). What goes wrong becomes `OfferRefused` carrying the response to send: 503 `no_media_ports`
  when every `--media-ports` port is taken, 400 `bad_sdp` for anything about the offer itself.
- `on_connection_state(pc, gone)`: a viewer that connects starts on a keyframe; a connection that fails
  or closes runs `gone()` (the owner's teardown).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from server import aiortc_patches, codecs, ice, media_ports
from server.errors import json_error

log = logging.getLogger(__name__)

_LIVE: weakref.WeakSet[RTCPeerConnection] = weakref.WeakSet()


class OfferRefused(Exception):
    """An offer the server will not answer; `response` is the 4xx/503 JSON error to send."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def new_peer_connection(config: Any) -> RTCPeerConnection:
    pc = RTCPeerConnection(ice.from_config(config).rtc_configuration())
    codecs.prepare(pc, config.video_codec)  # before the offer is applied
    _LIVE.add(pc)
    return pc


def live_peer_connections() -> int:
    """Peer connections made here and not yet closed (a leak shows here)."""
    return sum(1 for pc in _LIVE if pc.connectionState != "closed")


async def answer(pc: RTCPeerConnection, sdp: str, check: Callable[[], None] | None = None) -> RTCSessionDescription:
    """Offer in, complete answer out. `check` runs once the offer is applied (its tracks are known) and may
    raise ValueError to refuse it. Raises OfferRefused; `pc` is left for its owner to close."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if check is not None:
            check()
        await pc.setLocalDescription(await pc.createAnswer())
    except media_ports.MediaPortsExhausted as exc:
        raise OfferRefused(
            json_error(503, "no_media_ports", f"{exc}; try again later", headers={"Retry-After": "5"})
        ) from None
    except Exception as exc:
        log.info("refused offer: %r", exc)
        raise OfferRefused(json_error(400, "bad_sdp", f"cannot use this offer: {exc or type(exc).__name__}")) from None
    return pc.localDescription


def on_connection_state(pc: RTCPeerConnection, gone: Callable[[], Awaitable[None]], label: str = "") -> None:
    @pc.on("connectionstatechange")
    async def on_state() -> None:
        log.info("%s: connection %s", label or "peer", pc.connectionState)
        if pc.connectionState == "connected":
            aiortc_patches.request_keyframe(pc)  # a new or resumed viewer starts on a keyframe
        if pc.connectionState in ("failed", "closed"):
            await gone()
