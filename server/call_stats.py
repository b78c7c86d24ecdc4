"""A call's `{"type":"stats"}` message (once a second on its `control` channel): what its video, speech and
send hint did lately. The message's fields are listed in README.md (Data channel `control`); the network
part (`network`: loss both ways, round trip) is added by the stats loop from server/netstats.py.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.session import Session


def stats_message(session: Session) -> dict[str, Any]:
    p = session.relay
    if p is None:
        return {"type": "stats", "fps_in": 0.0, "fps_out": 0.0, "dropped": 0, "latency_ms": {}, "queue_age_ms": 0}
    s = p.stats
    speech = session.audio.speech_stats() if session.audio is not None else {}  # speech_ms, speech_dropped_s
    return speech | {
        "type": "stats",
        "fps_in": round(s.fps_in.rate(), 2),
        "fps_out": round(s.fps_out.rate(), 2),
        "dropped": p.dropped,
        "latency_ms": {
            **{k: round(v, 2) for k, v in s.last_timings_ms.items()},
            "encode": round(s.last_encode_ms, 2),
        },
        "queue_age_ms": round(s.last_queue_age_ms, 2),
        "transit_ms": round(s.last_transit_ms, 2),
        "shown_age_ms": round(s.last_shown_age_ms, 2),
        "frames_in": s.frames_in,
        "frames_out": s.frames_out,
        "errors": s.errors,
        "batch": s.last_batch,
        "send": session.hint,
        "server_time": time.time() * 1000.0,
    }
