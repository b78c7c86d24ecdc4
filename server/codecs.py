"""Video codec choice and bitrate cap of the returned track; keyframes for new and resumed viewers.

`--video-codec auto|vp8|h264`: the server's answer lists the codecs in that order of preference
(`RTCRtpTransceiver.setCodecPreferences`), and `/api/ice` tells the page the same choice so its
own `setCodecPreferences` agrees. `auto` prefers H.264 when both sides have it (phones encode and
decode it in hardware) and falls back to VP8. aiortc negotiates codecs inside
`setRemoteDescription`, so the preference is set on a video transceiver made *before* the offer
is applied; the offer's video m-line then takes that transceiver.
aiortc's sender already answers PLI and FIR with a keyframe, and a new peer connection's
encoder starts with one; `request_keyframe` asks again when a viewer joins an existing output.
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.codecs import h264, vpx

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


def negotiated_video_codec(pc: RTCPeerConnection) -> str | None:
    """The mime type the call's video uses after the answer (None before), e.g. 'video/H264'."""
    for transceiver in pc.getTransceivers():
        codecs = getattr(transceiver, "_codecs", None)
        if transceiver.kind == "video" and codecs:
            return codecs[0].mimeType
    return None


def apply_bitrate_cap(max_bitrate: int | None) -> None:
    """Cap aiortc's VP8/H.264 encoders (start, floor and ceiling; REMB moves within them). Process-wide."""
    if not max_bitrate:
        return
    for module in (vpx, h264):
        module.MAX_BITRATE = min(module.MAX_BITRATE, max_bitrate)
        module.MIN_BITRATE = min(module.MIN_BITRATE, module.MAX_BITRATE)
        module.DEFAULT_BITRATE = min(module.DEFAULT_BITRATE, module.MAX_BITRATE)


def request_keyframe(pc: RTCPeerConnection) -> None:
    """The next frame of every video sender of `pc` is a keyframe (a viewer joined or resumed)."""
    for sender in pc.getSenders():
        if sender.track is not None and sender.track.kind == "video":
            sender._send_keyframe()  # the same hook aiortc uses for PLI/FIR
