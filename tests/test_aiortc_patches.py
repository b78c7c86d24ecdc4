"""server/aiortc_patches.py: each change to aiortc/aioice is active where it is wanted and does what it claims,
and on another aiortc/aioice version the server refuses (a flag that needs a change) or runs without it."""

from __future__ import annotations

import asyncio
import fractions
import subprocess
import sys

import aiortc.rtcicetransport
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpCodecParameters, VideoStreamTrack, rtcrtpreceiver
from aiortc.codecs import h264, vpx
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket
from av import VideoFrame

from server import aiortc_patches, media_ports
from server.aiortc_patches import MarkerJitterBuffer, PatchRefused
from server.app import create_app
from server.config import ServerConfig
from server.state import STATE
from tests.serverproc import REPO, free_port

OTHER_AIORTC = {**aiortc_patches.WRITTEN_FOR, "aiortc": "1.17.0"}
OTHER_AIOICE = {**aiortc_patches.WRITTEN_FOR, "aioice": "0.14.0"}


# ---- marker-jitter-buffer ---------------------------------------------------------------------------------
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


def test_jitter_buffer_drops_a_lost_packet_after_a_quarter_second():
    """A lost packet that never comes back stalls the buffer at most MAX_STALL_S, then a keyframe is asked."""
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)

    def one(seq: int, frame: int) -> RtpPacket:  # one packet per frame at 15 fps, marker set
        p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=frame * 6000, marker=1)
        p._data = bytes([frame % 256])
        return p

    out, plis = [], 0
    for frame in range(40):
        if frame == 5:
            continue  # lost, and its retransmission too
        pli, got = buffer.add(one(frame, frame))
        plis += pli
        if got is not None:
            out.append(got.timestamp // 6000)
    assert out[:5] == [0, 1, 2, 3, 4]
    assert plis == 1  # one keyframe request when the gap is given up
    held = out[5] - 6  # frames after the loss that arrived while the buffer still waited for it
    assert 0 < held <= 0.25 * 15 + 1, out  # then it skips to the newest frame (the held ones are dropped)
    assert out[-1] == 39 and out[5:] == list(range(out[5], 40))  # then each frame at once


async def test_the_receivers_aiortc_builds_use_the_marker_buffer():
    report = aiortc_patches.install(ServerConfig(https_port=0))
    assert {"marker-jitter-buffer", "keyframe-on-join", "receiver-ssrc-counters"} <= set(report.active)
    assert set(report.unused) == {"media-port-range", "bitrate-cap"}  # no --media-ports, no --max-bitrate
    assert rtcrtpreceiver.JitterBuffer is MarkerJitterBuffer
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video")
        pc.addTransceiver("audio")
        buffers = [r._RTCRtpReceiver__jitter_buffer for r in pc.getReceivers()]
        assert [type(b) for b in buffers] == [MarkerJitterBuffer, MarkerJitterBuffer]
        assert [b._is_video for b in buffers] == [True, False]  # audio keeps aiortc's own logic (see above)
    finally:
        await pc.close()


# ---- media-port-range -------------------------------------------------------------------------------------
async def test_media_port_range_binds_the_host_candidates_to_the_pool():
    lo = free_port()
    ports = [lo, lo + 1]
    report = aiortc_patches.install(ServerConfig(https_port=0, media_ports=ports))
    assert "media-port-range" in report.active
    assert aiortc.rtcicetransport.Connection is aiortc_patches.PortRangeConnection
    token = media_ports.CURRENT_POOL.set(media_ports.PortPool(ports))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video")
        await pc.setLocalDescription(await pc.createOffer())  # gathers the host candidates
    finally:
        media_ports.CURRENT_POOL.reset(token)
    try:
        candidates = [line.split() for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")]
        assert candidates and {int(c[5]) for c in candidates if c[7] == "host"} <= set(ports), candidates
    finally:
        await pc.close()
    outside = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no pool current: plain aioice, any port
    try:
        outside.addTransceiver("video")
        await outside.setLocalDescription(await outside.createOffer())
        assert "a=candidate" in outside.localDescription.sdp
    finally:
        await outside.close()


# ---- bitrate-cap ------------------------------------------------------------------------------------------
def test_max_bitrate_caps_both_encoders(monkeypatch):
    for module in (vpx, h264):
        for name in ("MAX_BITRATE", "MIN_BITRATE", "DEFAULT_BITRATE"):
            monkeypatch.setattr(module, name, getattr(module, name))  # restored after the test
    before = vpx.Vp8Encoder().target_bitrate
    assert before > 400_000  # aiortc's own start: the cap below is a real change
    report = aiortc_patches.install(ServerConfig(https_port=0, max_bitrate=400_000))
    assert "bitrate-cap" in report.active
    for encoder in (vpx.Vp8Encoder(), h264.H264Encoder()):
        assert encoder.target_bitrate <= 400_000
        encoder.target_bitrate = 5_000_000  # what a generous REMB would ask
        assert encoder.target_bitrate == 400_000


# ---- keyframe-on-join -------------------------------------------------------------------------------------
class Frames(VideoStreamTrack):
    """Moving noise, so that a VP8 inter frame is cheap and a keyframe plainly differs."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    async def recv(self) -> VideoFrame:
        self.n += 1
        rgb = np.random.default_rng(self.n % 2).integers(0, 256, (96, 128, 3), dtype=np.uint8)
        frame = VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = self.n * 3000, fractions.Fraction(1, 90000)
        return frame


async def _keyframes(pc: RTCPeerConnection, sender, requests: set[int]) -> list[bool]:
    """Encode 6 frames with aiortc's own sender path; ask for a keyframe before the frames in `requests`."""
    codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    keys = []
    for i in range(6):
        if i in requests:
            aiortc_patches.request_keyframe(pc)
        encoded = await sender._next_encoded_frame(codec)
        _, payload = vpx.VpxPayloadDescriptor.parse(encoded.payloads[0])
        keys.append(payload[0] & 1 == 0)  # VP8 frame tag: bit 0 clear = key frame (RFC 6386 9.1)
    return keys


async def test_request_keyframe_makes_the_next_frame_a_keyframe(monkeypatch):
    aiortc_patches.install(ServerConfig(https_port=0))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        sender = pc.addTrack(Frames())
        assert await _keyframes(pc, sender, {3}) == [True, False, False, True, False, False]
        monkeypatch.setattr(aiortc_patches, "ACTIVE", aiortc_patches.ACTIVE - {"keyframe-on-join"})
        assert aiortc_patches.request_keyframe(pc) is False  # without the patch: nothing asked, nothing forced
        assert await _keyframes(pc, sender, {3}) == [False] * 6
    finally:
        await pc.close()


# ---- receiver-ssrc-counters -------------------------------------------------------------------------------
async def test_inbound_counters_count_the_packets_a_real_call_received(monkeypatch):
    aiortc_patches.install(ServerConfig(https_port=0))
    sender, receiver = (
        RTCPeerConnection(RTCConfiguration(iceServers=[])),
        RTCPeerConnection(RTCConfiguration(iceServers=[])),
    )
    got = asyncio.Event()
    readers: list[asyncio.Task] = []

    @receiver.on("track")
    def on_track(track) -> None:
        async def read() -> None:
            for _ in range(10):
                await track.recv()
            got.set()

        readers.append(asyncio.ensure_future(read()))

    try:
        sender.addTrack(Frames())
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        await asyncio.wait_for(got.wait(), 30)
        ours = await aiortc_patches.inbound_video(receiver)
        assert ours[0] >= 10 and ours[1] == 0, ours  # every frame is at least one packet; loopback loses none
        sent = sum(
            s.packetsSent for s in (await sender.getSenders()[0].getStats()).values() if s.type == "outbound-rtp"
        )
        assert ours[0] <= sent
        monkeypatch.setattr(aiortc_patches, "ACTIVE", aiortc_patches.ACTIVE - {"receiver-ssrc-counters"})
        public = await aiortc_patches.inbound_video(receiver)  # aiortc's getStats: the same with no RTX stream
        assert public[0] >= ours[0] and public[1] == 0
    finally:
        await sender.close()
        await receiver.close()
        await asyncio.gather(*readers, return_exceptions=True)


# ---- another aiortc / aioice -------------------------------------------------------------------------------
def test_another_aiortc_runs_without_the_optimisations_and_says_why():
    report = aiortc_patches.plan(ServerConfig(https_port=0), OTHER_AIORTC)
    assert report.active == []
    assert set(report.skipped) == {"marker-jitter-buffer", "keyframe-on-join", "receiver-ssrc-counters"}
    for name, why in report.skipped.items():
        assert f"running without {name}" in why and "aiortc 1.16.0" in why and "installed: aiortc 1.17.0" in why
    # an aioice change alone leaves the aiortc-only patches in place
    assert "marker-jitter-buffer" in aiortc_patches.plan(ServerConfig(https_port=0), OTHER_AIOICE).active


@pytest.mark.parametrize(
    ("config", "versions", "name", "installed"),
    [
        (ServerConfig(https_port=0, media_ports=[50000]), OTHER_AIOICE, "media-port-range", "aioice 0.14.0"),
        (ServerConfig(https_port=0, media_ports=[50000]), OTHER_AIORTC, "media-port-range", "aiortc 1.17.0"),
        (ServerConfig(https_port=0, max_bitrate=400_000), OTHER_AIORTC, "bitrate-cap", "aiortc 1.17.0"),
    ],
)
def test_a_flag_that_needs_a_patch_is_refused_on_another_version(config, versions, name, installed):
    with pytest.raises(PatchRefused, match=name) as refused:
        aiortc_patches.plan(config, versions)
    assert installed in str(refused.value) and "pip install -e ." in str(refused.value)


def test_a_skipped_patch_shows_in_the_apps_warnings(monkeypatch):
    monkeypatch.setattr(aiortc_patches, "ACTIVE", set(aiortc_patches.ACTIVE))  # restored after the test
    monkeypatch.setattr(aiortc_patches, "installed_versions", lambda: OTHER_AIORTC)
    state = create_app(ServerConfig(https_port=0), load_models=False)[STATE]
    assert state.patches.active == [] and "marker-jitter-buffer" in state.patches.skipped
    assert any("running without marker-jitter-buffer" in w for w in state.warnings)
    assert "keyframe-on-join" not in aiortc_patches.ACTIVE


def test_serve_refuses_to_start_with_a_clear_message():
    """The real CLI on an aioice it was not written for, with --media-ports: exit 2, the patch and version named."""
    code = (
        "import importlib.metadata as m, sys; real = m.version;"
        "m.version = lambda n: '0.14.0' if n == 'aioice' else real(n);"
        "from server.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    args = ["serve", "--port", str(free_port()), "--https-port", "0", "--engine", "passthrough"]
    args += ["--stt", "off", "--matting", "off", "--media-ports", "50000-50010"]
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "media-port-range" in done.stderr and "installed: aioice 0.14.0" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


async def test_a_running_server_reports_its_patches(start_server):
    health = start_server("--max-bitrate", "400000").health()
    patches = health["aiortc_patches"]
    assert set(patches["active"]) == {
        "marker-jitter-buffer",
        "bitrate-cap",
        "keyframe-on-join",
        "receiver-ssrc-counters",
    }
    assert patches["skipped"] == {} and patches["unused"] == ["media-port-range"]
    assert patches["written_for"] == {"aiortc": "1.16.0", "aioice": "0.13.0"}


def test_pyproject_pins_exactly_the_versions_the_patches_were_written_for():
    import re

    text = (REPO / "pyproject.toml").read_text()
    pins = dict(re.findall(r'^\s*"(aiortc|aioice)([^"]*)",', text, re.M))
    assert all(spec.startswith("==") for spec in pins.values()), pins  # exact, not a range
    pins = {name: spec[2:] for name, spec in pins.items()}
    assert pins == aiortc_patches.WRITTEN_FOR
    assert aiortc_patches.installed_versions() == aiortc_patches.WRITTEN_FOR  # what `pip install -e .` put here
