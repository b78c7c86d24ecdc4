"""30 connect/hang-up cycles leave no sessions, peer connections, tasks or threads behind."""

from __future__ import annotations

import asyncio
import time

from tests import churn
from tests.rtc_client import RtcClient


async def _cycle(base: str, hang_up: bool = True) -> None:
    client = RtcClient(base)
    await client.connect()
    await client.wait_frames(2)
    await client.close(hang_up=hang_up)


async def _settled(server, want_sessions: int = 0, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = server.health()
        if health["sessions"] == want_sessions and health["peer_connections"] == want_sessions:
            return health
        if time.monotonic() > deadline:
            return health
        await asyncio.sleep(0.2)


async def test_thirty_calls_leave_nothing_behind(start_server):
    server = start_server()
    for _ in range(3):  # warm-up: lazily created worker pools reach their size
        await _cycle(server.base)
    baseline = await _settled(server)
    assert baseline["sessions"] == 0
    for i in range(30):
        # every third call ends without a DELETE: the client just closes (ICE/DTLS teardown path)
        await _cycle(server.base, hang_up=i % 3 != 0)
    after = await _settled(server, timeout=40.0)
    print("baseline", baseline, "after", after)
    assert after["sessions"] == 0, after
    assert after["peer_connections"] == 0, after
    assert after["tasks"] <= baseline["tasks"], (baseline, after)
    # worker pools are created once and reused, never a thread per call (the codec pool may grow to its size
    # when two encodes overlap: a strict "no new thread" failed on main too, about one run in two under load)
    churn.assert_threads_back(baseline, after)
