"""server/jitter.py: a video frame leaves the jitter buffer at its marked last packet, not one frame later."""

from __future__ import annotations

from aiortc import rtcrtpreceiver
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from server.jitter import MarkerJitterBuffer, install


def packet(seq: int, timestamp: int, marker: bool) -> RtpPacket:
    p = RtpPacket(sequence_number=seq, timestamp=timestamp, marker=int(marker))
    p._data = bytes([seq])
    return p


def released(buffer: JitterBuffer, packets: list[tuple[int, int, bool]]) -> list[tuple[int, int, bytes] | None]:
    out = []
    for seq, ts, marker in packets:
        _, frame = buffer.add(packet(seq, ts, marker))
        out.append((seq, frame.timestamp, frame.data) if frame else None)
    return out


def test_frames_leave_at_their_marker_one_frame_sooner_than_stock():
    stream = [(0, 100, False), (1, 100, False), (2, 100, True), (3, 200, False), (4, 200, True), (5, 300, True)]
    stock = released(JitterBuffer(capacity=128, is_video=True), stream)
    ours = released(MarkerJitterBuffer(capacity=128, is_video=True), stream)
    assert stock == [None, None, None, (3, 100, b"\x00\x01\x02"), None, (5, 200, b"\x03\x04")]
    assert ours == [None, None, (2, 100, b"\x00\x01\x02"), None, (4, 200, b"\x03\x04"), (5, 300, b"\x05")]


def test_out_of_order_and_gaps_wait_for_the_missing_packet():
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    out = released(buffer, [(10, 100, False), (12, 100, True)])
    assert out == [None, None]  # packet 11 missing: not complete
    out = released(buffer, [(11, 100, False)])
    assert out == [(11, 100, b"\x0a\x0b\x0c")]


def test_audio_buffers_are_untouched():
    buffer = MarkerJitterBuffer(capacity=16, prefetch=4)
    assert released(buffer, [(0, 100, True)]) == [None]


def test_install_swaps_the_receivers_class():
    assert install() is True
    assert rtcrtpreceiver.JitterBuffer is MarkerJitterBuffer
    assert install() is True
