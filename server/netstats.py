"""Network side of the per-second `stats` message: loss and round trip, so the page can show loss and recovery.

`network.packets_lost_in`: camera packets that never arrived (after NACK retransmission); `network.remote`:
what the viewer reports about our output (its loss fraction and the RTCP round trip). A lossy phone shows
rising totals while the call keeps moving (NACK/RTX, PLI → keyframe). The remote numbers come from
`RTCPeerConnection.getStats()`; the inbound ones need aiortc's per-SSRC counters (server/aiortc_patches.py).
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc import RTCPeerConnection

from server import aiortc_patches

log = logging.getLogger(__name__)


async def summary(pc: RTCPeerConnection) -> dict[str, Any]:
    """Video loss both ways (cheap: counters aiortc already keeps)."""
    try:
        received, lost, jitter = await aiortc_patches.inbound_video(pc)  # every SSRC: media and RTX
    except Exception:  # numbers for a display: never let them stop the stats loop
        log.debug("inbound stats unavailable", exc_info=True)
        received = lost = jitter = 0
    out: dict[str, Any] = {"packets_in": received, "packets_lost_in": lost, "jitter_in": jitter}
    try:
        report = await pc.getStats()
    except Exception:  # a closing connection: no remote numbers this second
        return out
    for stats in report.values():
        if stats.type == "remote-inbound-rtp" and getattr(stats, "kind", None) == "video":
            rtt = stats.roundTripTime  # None until the first RTCP round trip
            out["remote"] = {
                "packets_lost": max(0, int(stats.packetsLost or 0)),
                # aiortc passes the receiver report's 8-bit field (lost / 256) as it is: made a fraction here
                "fraction_lost": round(float(stats.fractionLost or 0) / 256.0, 4),
                "round_trip_ms": round(float(rtt) * 1000.0, 1) if rtt is not None else None,
            }
    return out
