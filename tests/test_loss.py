"""Under 5% random packet loss both ways the call keeps moving (issue 15, point 4).

The aiortc test client drops packets in its own ICE sockets (aioice's `StunProtocol`: every
datagram it sends or receives, media and STUN alike), so the server sees a lossy network and
the client does too. One call: a lossless phase, then a lossy phase of the same length; the lossy
phase must keep >= 70% of the lossless frame rate, with no gap over 2 s between received frames.
Recovery is NACK/RTX retransmission plus PLI → keyframe (aiortc's sender answers PLI/FIR).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import numpy as np
import pytest
from aioice import ice as aioice_ice
from aiortc import rtcrtpreceiver
from aiortc.mediastreams import MediaStreamError

from server import aiortc_patches
from tests.rtc_client import PatternVideoTrack, RtcClient, read_frame_id

pytestmark = pytest.mark.slow

PHASE_S = 12.0
LOSS = 0.05


class LossyNetwork:
    """Drops a fraction of the client's datagrams at random, in both directions, while `loss` > 0."""

    def __init__(self, seed: int = 15) -> None:
        self.loss = 0.0
        self.rng = random.Random(seed)
        self.sent = self.dropped_out = self.received = self.dropped_in = 0

    def install(self, monkeypatch) -> None:
        send_data, datagram_received = aioice_ice.StunProtocol.send_data, aioice_ice.StunProtocol.datagram_received
        net = self

        async def lossy_send(protocol, data, addr):
            net.sent += 1
            if net.loss and net.rng.random() < net.loss:
                net.dropped_out += 1
                return
            await send_data(protocol, data, addr)

        def lossy_receive(protocol, data, addr):
            net.received += 1
            if net.loss and net.rng.random() < net.loss:
                net.dropped_in += 1
                return
            datagram_received(protocol, data, addr)

        monkeypatch.setattr(aioice_ice.StunProtocol, "send_data", lossy_send)
        monkeypatch.setattr(aioice_ice.StunProtocol, "datagram_received", lossy_receive)


class TimingClient(RtcClient):
    """Records (arrival time, round-trip latency) of every received frame, by the id stamped on it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.video = PatternVideoTrack(self.fps)
        self.arrivals: list[tuple[float, float]] = []

    async def _read_video(self, track) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                frame_id = read_frame_id(frame.to_ndarray(format="rgb24"), inverted=True)
                sent = self.video.sent_at.get(frame_id)
                self.frames_received += 1
                self.arrivals.append((now, (now - sent) * 1000.0 if sent is not None else float("nan")))


def phase_numbers(arrivals: list[tuple[float, float]], start: float, end: float) -> dict[str, float]:
    times = [t for t, _ in arrivals if start <= t < end]
    latencies = np.array([lat for t, lat in arrivals if start <= t < end and lat == lat])
    gaps = np.diff([start, *times, end])
    return {
        "frames": len(times),
        "fps": len(times) / (end - start),
        "max_gap_s": float(gaps.max()),
        "latency_p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
        "latency_p95_ms": float(np.percentile(latencies, 95)) if len(latencies) else float("nan"),
    }


async def test_call_keeps_moving_under_packet_loss(start_server, monkeypatch):
    # The client receives with the server's jitter buffer (server/aiortc_patches.py), as the server does: stock aiortc
    # stalls for ~1 s on a lost retransmission and keeps that as latency (measured: p50 1.5-2.3 s under 5 %).
    monkeypatch.setattr(rtcrtpreceiver, "JitterBuffer", aiortc_patches.MarkerJitterBuffer)
    net = LossyNetwork()
    net.install(monkeypatch)
    server = start_server()
    client = TimingClient(server.base, fps=15, settings={"passthrough_effect": "invert"})
    try:
        await client.connect()
        await client.wait_frames(15, timeout=30)
        t0 = time.monotonic()
        await asyncio.sleep(PHASE_S)
        t1 = time.monotonic()
        net.loss = LOSS
        await asyncio.sleep(PHASE_S)
        t2 = time.monotonic()
        net.loss = 0.0
        await asyncio.sleep(1.5)  # one more stats message, covering the lossy phase
        stats = [m for m in client.all_messages if m.get("type") == "stats"][-1]
    finally:
        await client.close()
    lossless, lossy = phase_numbers(client.arrivals, t0, t1), phase_numbers(client.arrivals, t1, t2)
    print(f"\nlossless: {lossless}\nlossy {LOSS:.0%}: {lossy}")
    print(f"dropped out {net.dropped_out}/{net.sent}, in {net.dropped_in}/{net.received}; server stats {stats}")
    # loss really happened both ways (a precondition; the stats below show the two ends saw it). Not "> 5": 5 % of
    # the ~250 datagrams a 12 s phase sends is 12 +- 3.4, and a burner run that cut the rate dropped exactly 5
    assert net.dropped_out > 0 and net.dropped_in > 0, (net.dropped_out, net.dropped_in)
    assert lossless["fps"] > 3, lossless
    assert lossy["fps"] >= 0.7 * lossless["fps"], (lossless, lossy)
    assert lossy["max_gap_s"] <= 2.0, lossy
    network = stats["network"]  # the stats show the loss, both ways
    assert network["packets_lost_in"] > 0 and network["remote"]["packets_lost"] > 0, network
