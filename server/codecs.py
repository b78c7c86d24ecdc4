"""Video codec choice and bitrate cap of the returned track; keyframes for new and resumed viewers.

`--video-codec auto|vp8|h264`: the server's answer lists the codecs in that order of preference
(`RTCRtpTransceiver.setCodecPreferences`), and `/api/ice` tells the page the same choice so its
own `setCodecPreferences` agrees. `auto` prefers H.264 when both sides have it (phones encode and
decode it in hardware) and falls back to VP8. aiortc negotiates codecs inside
`setRemoteDescription`, so the preference is set on a video transceiver made *before* the offer
is applied; the offer's video m-line then takes that transceiver.
aiortc's sender already answers PLI and FIR with a keyframe, and a new peer connection's
encoder starts with one. The bitrate cap (`--max-bitrate`) and the keyframe for a viewer that joins an
existing output reach inside aiortc: they are in server/aiortc_patches.py. The codec a call uses after
negotiation is the first payload type of the answer's video m-line (public SDP; nothing reads it here).
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender

CODEC_CHOICES = ("auto", "vp8", "h264")
_ORDER = {"auto": ("video/H264", "video/VP8"), "h264": ("video/H264",), "vp8": ("video/VP8",)}


def preferred_codecs(choice: str) -> list[Any]:
    """aiortc video capabilities in the order of `choice` (RTX kept, so NACK retransmissions still work)."""
    if choice not in _ORDER:
        raise ValueError(f"video codec is one of {CODEC_CHOICES}, got {choice!r}")
    caps = RTCRtpSender.getCapabilities("video").codecs
    ordered = [c for mime in _ORDER[choice] for c in caps if c.mimeType.lower() == mime.lower()]
    return ordered + [c for c in caps if c.mimeType.lower() == "video/rtx"]


def prepare(pc: RTCPeerConnection, choice: str) -> None:
    """Before `setRemoteDescription(offer)`: a video transceiver carrying the codec preference."""
    transceiver = pc.addTransceiver("video", direction="sendrecv")
    transceiver.setCodecPreferences(preferred_codecs(choice))
