"""Bad input gets a clear 4xx / error and loses nothing: a healthy call keeps streaming throughout."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.rtc_client import RtcClient

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_bad_requests_get_clear_errors_while_a_healthy_call_streams(start_server):
    server = start_server("--token", TOKEN)
    healthy = RtcClient(server.base, token=TOKEN)
    await healthy.connect()
    await healthy.wait_frames(10)
    try:
        frames_before = healthy.frames_received
        url = server.base
        async with aiohttp.ClientSession() as http:

            async def call(method, path, expect_status, expect_code, **kw):
                async with http.request(method, url + path, **kw) as resp:
                    body = await resp.json(content_type=None)
                    assert resp.status == expect_status, (path, resp.status, body)
                    assert body["error"]["code"] == expect_code, body
                    assert body["error"]["message"], body
                await asyncio.sleep(0.05)

            offer = {"sdp": "v=0\r\nthis is not sdp\r\n", "type": "offer"}
            await call("POST", "/api/offer", 400, "bad_sdp", json=offer, headers=AUTH)
            await call("POST", "/api/offer", 400, "bad_sdp", json={"sdp": "", "type": "answer"}, headers=AUTH)
            await call("POST", "/api/offer", 415, "unsupported_media_type", data="v=0", headers=AUTH)
            await call(
                "POST",
                "/api/offer",
                400,
                "bad_json",
                data="{oops",
                headers={**AUTH, "Content-Type": "application/json"},
            )
            big = {"sdp": "x" * 400_000, "type": "offer"}
            await call("POST", "/api/offer", 413, "too_large", json=big, headers=AUTH)
            bad_settings = {"sdp": "v=0", "type": "offer", "settings": {"strength": 7}}
            await call("POST", "/api/offer", 400, "invalid_settings", json=bad_settings, headers=AUTH)
            await call("POST", "/api/offer", 401, "unauthorized", json=offer)
            await call("POST", "/api/offer", 401, "unauthorized", json=offer, headers={"Authorization": "Bearer nope"})
            await call("GET", "/api/settings?token=wrong", 401, "unauthorized")
            await call("DELETE", "/api/sessions/not-a-session", 404, "unknown_session", headers=AUTH)
            await call("GET", "/api/no-such-route", 404, "not_found", headers=AUTH)

            async with http.get(url + "/api/settings", headers=AUTH) as resp:
                assert resp.status == 200
            async with http.get(url + f"/api/settings?token={TOKEN}") as resp:
                assert resp.status == 200

        # and over the data channel of the healthy call itself
        for raw in ["{", json.dumps({"type": "nope"}), json.dumps({"type": "settings", "settings": {"steps": 9}})]:
            err = await healthy.request(raw, "error")
            assert err["code"] in {"bad_json", "unknown_type", "invalid_settings"}

        await healthy.wait_frames(15)
        assert healthy.frames_received > frames_before + 15
        assert server.health()["sessions"] == 1
    finally:
        await healthy.close()
