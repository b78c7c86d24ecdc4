"""WHIP ingest and WHEP playback (issue 15, point 5): an aiortc WHIP sender feeds a session, a WHEP viewer
receives that session's transformed frames (ids stamped on input, read on output), DELETE ends both,
a wrong token gives 401 with the JSON error body."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from tests.rtc_client import PatternVideoTrack, read_frame_id

TOKEN = "whip-test-token"


class WhepViewer:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.frames: list[tuple[np.ndarray, float]] = []
        self.ended = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self.frames.append((frame.to_ndarray(format="rgb24"), time.monotonic()))
                del self.frames[:-30]
        except MediaStreamError:
            self.ended.set()


async def sdp_post(http, url: str, sdp: str, token: str = TOKEN):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    async with http.post(url, data=sdp, headers=headers) as resp:
        body = await resp.text()
        return resp.status, resp.headers.get("Location"), body


async def test_whip_feeds_a_session_and_whep_watches_it(start_server):
    server = start_server("--token", TOKEN)
    base = server.base
    sender_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    camera = PatternVideoTrack(fps=20)
    sender_pc.addTransceiver(camera, direction="sendonly")
    viewer = WhepViewer()
    async with aiohttp.ClientSession() as http:
        try:
            await sender_pc.setLocalDescription(await sender_pc.createOffer())
            offer = sender_pc.localDescription.sdp
            status, _, body = await sdp_post(http, f"{base}/whip", offer, token="wrong")
            assert status == 401 and '"unauthorized"' in body
            status, location, answer = await sdp_post(
                http, f"{base}/whip?settings=%7B%22passthrough_effect%22%3A%22invert%22%7D", offer
            )
            assert status == 201 and location.startswith("/whip/"), answer
            await sender_pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            session_id = location.rsplit("/", 1)[1]

            viewer.pc.addTransceiver("video", direction="recvonly")
            viewer.pc.on("track", lambda t: setattr(viewer, "_task", asyncio.ensure_future(viewer.read(t))))
            await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
            status, _, body = await sdp_post(http, f"{base}/whep/{session_id}", viewer.pc.localDescription.sdp, "bad")
            assert status == 401
            status, viewer_location, answer = await sdp_post(
                http, f"{base}/whep/{session_id}", viewer.pc.localDescription.sdp
            )
            assert status == 201 and viewer_location.startswith(f"/whep/{session_id}/"), answer
            await viewer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

            deadline = time.monotonic() + 30
            while len(viewer.frames) < 10 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert len(viewer.frames) >= 10, "the WHEP viewer received no frames"
            # The session's transformed frames (inverted by the server), carrying ids the WHIP sender stamped
            image, _ = viewer.frames[-1]
            frame_id = read_frame_id(image, inverted=True)
            assert frame_id in camera.sent_at and frame_id > 0
            assert image[256 + 64, 64].astype(int).tolist() != [40, 40, 200]  # not the raw camera colour
            ids = [read_frame_id(img, inverted=True) for img, _ in viewer.frames[-5:]]
            assert all(i in camera.sent_at for i in ids) and ids == sorted(ids)

            async with http.delete(f"{base}{location}", headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401
            async with http.delete(f"{base}{location}", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                assert resp.status == 200
            await asyncio.wait_for(viewer.ended.wait(), 10)  # the viewer's track ended with the session
            health = server.health()
            for _ in range(50):
                if health["sessions"] == 0 and health["peer_connections"] == 0:
                    break
                await asyncio.sleep(0.1)
                health = server.health()
            assert health["sessions"] == 0 and health["peer_connections"] == 0
            async with http.delete(f"{base}{viewer_location}", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                assert resp.status == 404 and (await resp.json())["error"]["code"] == "unknown_viewer"
        finally:
            if viewer._task is not None:
                viewer._task.cancel()
                with contextlib.suppress(BaseException):
                    await viewer._task
            await viewer.pc.close()
            await sender_pc.close()


async def test_whep_viewer_delete_and_bad_requests(start_server):
    server = start_server("--token", TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        status, _, body = await sdp_post(http, f"{server.base}/whep/nope", "v=0\r\n")
        assert status == 404 and '"unknown_session"' in body
        async with http.post(
            f"{server.base}/whip", data="{}", headers={**headers, "Content-Type": "application/json"}
        ) as r:
            assert r.status == 415 and (await r.json())["error"]["code"] == "unsupported_media_type"
        status, _, body = await sdp_post(http, f"{server.base}/whip", "hello")
        assert status == 400 and '"bad_sdp"' in body
        status, _, body = await sdp_post(http, f"{server.base}/whip", "v=0\r\nnonsense\r\n")
        assert status == 400 and '"bad_sdp"' in body
    assert server.health()["status"] == "ok"
