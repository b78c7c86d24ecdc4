"""Video codec choice and bitrate cap of the returned track; keyframes for new and resumed viewers.

`--video-codec auto|vp8|h264`: the server's answer lists the codecs in that order of preference
(`RTCRtpTransceiver.setCodecPreferences`), and `/api/ice` tells the page the picked codec so its
own `setCodecPreferences` agrees. `auto` is "the codec this server encodes most cheaply among those
both sides offer": the encode cost of each codec is measured at start-up (server/codec_cost.py), so
with software encoders (aiortc's libvpx and libx264) it is VP8, which every browser that runs the
page decodes; H.264 comes first only where it measured cheaper (a hardware encoder). A caller that
offers only one of them gets that one. `vp8` and `h264` are explicit overrides.
aiortc negotiates codecs inside `setRemoteDescription`, so the preference is set on a video
transceiver made *before* the offer is applied; the offer's video m-line then takes that transceiver.
aiortc's sender already answers PLI and FIR with a keyframe, and a new peer connection's
encoder starts with one. The bitrate cap (`--max-bitrate`) and the keyframe for a viewer that joins an
existing output reach inside aiortc: they are in server/aiortc_patches.py. The codec a call uses after
negotiation is the first payload type of the answer's video m-line (public SDP; nothing reads it here).
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender

from server.codec_cost import PROBE, EncodeCostProbe

CODEC_CHOICES = ("auto", "vp8", "h264")
_ORDER = {"h264": ("video/H264",), "vp8": ("video/VP8",)}  # explicit overrides; `auto` is measured
_MIME = {"vp8": "video/VP8", "h264": "video/H264"}


def picked(choice: str, probe: EncodeCostProbe = PROBE) -> str:
    """The codec this server prefers for `choice`: the override itself, or (auto) the cheapest measured
    encoder, VP8 until the measurement is done."""
    if choice not in CODEC_CHOICES:
        raise ValueError(f"video codec is one of {CODEC_CHOICES}, got {choice!r}")
    if choice != "auto":
        return choice
    cost = probe.result()
    return "vp8" if cost is None else cost.cheapest()


def codec_order(choice: str, probe: EncodeCostProbe = PROBE) -> tuple[str, ...]:
    """Mime types in order of preference: an override alone; `auto` both, the cheaper first."""
    first = picked(choice, probe)
    if choice != "auto":
        return _ORDER[choice]
    return (_MIME[first], *(m for m in _MIME.values() if m != _MIME[first]))


def describe(choice: str, probe: EncodeCostProbe = PROBE) -> dict[str, Any]:
    """`/api/settings` `server.video_codec`: the setting, the codec picked and why, the measured costs."""
    cost = probe.result()
    first = picked(choice, probe)
    encode_ms = dict(cost.ms) if cost is not None else {}
    if choice != "auto":
        reason = f"--video-codec {choice} (explicit)"
    elif cost is None:
        reason = "encode cost not measured yet: VP8, the software encoders' cheaper codec"
    else:
        costs = ", ".join(f"{name.upper()} {ms:.1f} ms" for name, ms in cost.ms.items())
        reason = f"cheapest to encode here ({costs} a frame at {cost.side} px)"
        if cost.errors:
            reason += "; " + "; ".join(f"{name.upper()} left out: {why}" for name, why in cost.errors.items())
    return {
        "setting": choice,
        "picked": first,
        "reason": reason,
        "encode_ms": encode_ms,
        "measured_at_px": cost.side if cost is not None else None,
    }


def preferred_codecs(choice: str, probe: EncodeCostProbe = PROBE) -> list[Any]:
    """aiortc video capabilities in the order of `choice` (RTX kept, so NACK retransmissions still work)."""
    order = codec_order(choice, probe)
    caps = RTCRtpSender.getCapabilities("video").codecs
    ordered = [c for mime in order for c in caps if c.mimeType.lower() == mime.lower()]
    return ordered + [c for c in caps if c.mimeType.lower() == "video/rtx"]


def prepare(pc: RTCPeerConnection, choice: str) -> None:
    """Before `setRemoteDescription(offer)`: a video transceiver carrying the codec preference."""
    transceiver = pc.addTransceiver("video", direction="sendrecv")
    transceiver.setCodecPreferences(preferred_codecs(choice))
