"""Release each received video frame at its last packet, one frame interval sooner than aiortc does.

aiortc's `JitterBuffer` hands a video frame to the decoder only when the first packet of
the *next* frame arrives (it detects the end of a frame by a timestamp change). That adds
one camera frame interval (33 ms at 30 fps) to every frame before our pipeline even sees
it. Senders mark the last packet of a video frame with the RTP marker bit (RFC 7741 for
VP8, RFC 6184 for H.264; browsers and aiortc both set it), so a frame whose packets are all
in, ending with a marked packet, is complete and can go at once.

`install()` swaps the class that `aiortc.rtcrtpreceiver` instantiates; it refuses (and
the server keeps aiortc's stock behaviour) when aiortc's internals are not the ones this
was written against.
"""

from __future__ import annotations

import logging

from aiortc import jitterbuffer, rtcrtpreceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

log = logging.getLogger(__name__)


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's buffer, plus: a complete frame ending in a marked packet is released right away."""

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli_flag, frame = super().add(packet)
        if frame is None and self._is_video and self._origin is not None:
            frame = self._pop_complete_head()
            if frame is None and self._stalled(packet):
                self._skip_to(packet.timestamp)  # give up on the lost packet: newest frame, and a keyframe
                pli_flag = True
                frame = self._pop_complete_head()
        return pli_flag, frame

    # Under loss (issue 15): aiortc re-sends a NACK only when a *new* gap appears, so a lost retransmission
    # stalls the buffer until the next loss (~1 s at 5 %), and afterwards it releases one frame per packet,
    # so the stall stays as latency for the rest of the call. A head gap older than MAX_STALL_S of RTP time
    # is dropped instead: the buffer jumps to the newest frame and asks for a keyframe (PLI).
    MAX_STALL_S = 0.25

    def _stalled(self, newest: RtpPacket) -> bool:
        for count in range(self.capacity):
            oldest = self._packets[(self._origin + count) % self._capacity]
            if oldest is not None:
                age = (newest.timestamp - oldest.timestamp) & 0xFFFFFFFF
                return 0 < age < 0x80000000 and age > self.MAX_STALL_S * 90000
        return False

    def _skip_to(self, timestamp: int) -> None:
        """Drop every packet before the first one of the frame with `timestamp`."""
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is not None and packet.timestamp == timestamp:
                self.remove(count)
                return

    def _pop_complete_head(self) -> JitterFrame | None:
        """The frame at the head of the buffer, if all its packets are in up to a marked one."""
        packets: list[RtpPacket] = []
        timestamp = None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None or (timestamp is not None and packet.timestamp != timestamp):
                return None  # a gap: the stock logic (or a later packet) completes it
            timestamp = packet.timestamp
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(data=b"".join(p._data for p in packets), timestamp=timestamp)
        return None


def _compatible() -> bool:
    probe = JitterBuffer(capacity=4, is_video=True)
    return (
        rtcrtpreceiver.JitterBuffer is JitterBuffer
        and jitterbuffer.JitterBuffer is JitterBuffer
        and all(hasattr(probe, name) for name in ("_packets", "_origin", "_capacity", "_is_video", "remove"))
    )


def install() -> bool:
    """Make aiortc's receivers use MarkerJitterBuffer; True when installed (idempotent)."""
    if rtcrtpreceiver.JitterBuffer is MarkerJitterBuffer:
        return True
    if not _compatible():
        log.warning("aiortc's JitterBuffer is not the one server/jitter.py knows; keeping aiortc's own")
        return False
    rtcrtpreceiver.JitterBuffer = MarkerJitterBuffer
    return True
