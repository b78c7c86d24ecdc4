"""Baseline for bench/latency.py: the smallest aiortc echo server (aiortc's examples/server shape).

`python bench/echo_server.py PORT` — POST /api/offer returns the received video track as is.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

pcs: set[RTCPeerConnection] = set()
relay = MediaRelay()


async def offer(request: web.Request) -> web.Response:
    params = await request.json()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pcs.add(pc)

    @pc.on("track")
    def on_track(track):
        if track.kind == "video":
            pc.addTrack(relay.subscribe(track))

    await pc.setRemoteDescription(RTCSessionDescription(sdp=params["sdp"], type=params["type"]))
    await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "session_id": "echo"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "engine_ready": True})


async def on_shutdown(app: web.Application) -> None:
    await asyncio.gather(*(pc.close() for pc in pcs))


def main() -> None:
    app = web.Application()
    app.router.add_post("/api/offer", offer)
    app.router.add_get("/healthz", healthz)
    app.on_shutdown.append(on_shutdown)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
