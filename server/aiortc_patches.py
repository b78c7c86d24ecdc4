"""Everything SpeakDraw changes or reads inside aiortc and aioice, in one module, installed from one place.

aiortc has no public way to do these five things; each is a `Patch` below with its name, why it exists,
the internals it touches and the versions it was written against (`WRITTEN_FOR`; pyproject.toml pins
exactly these). `install(config)` is the only caller of the patches' `apply` (from `create_app`), once per
process. On any other installed version:

- a change a flag asks for (`--media-ports`, `--max-bitrate`) refuses to start: `PatchRefused` names the
  patch, the version it was written for and the version installed (`speakdraw serve` prints it, exits 2);
- an optimisation or a monitoring read runs without the change and says so (log + `/api/settings`
  warnings), and `/healthz` `aiortc_patches` lists what is active and what was skipped, and why.

Where aiortc offers a public way, it is used instead and is not here: codec preferences
(`RTCRtpTransceiver.setCodecPreferences`, server/codecs.py), the viewer's loss and round trip
(`RTCPeerConnection.getStats()`, server/netstats.py), and the negotiated codec (the answer's SDP).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import aioice.turn
import aiortc.rtcicetransport
from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, jitterbuffer, rtcrtpreceiver
from aiortc.codecs import h264, vpx
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from server import media_ports

log = logging.getLogger(__name__)

# The versions every patch below was written against and tested with (pyproject.toml pins them).
WRITTEN_FOR = {"aiortc": "1.16.0", "aioice": "0.13.0"}


class PatchRefused(RuntimeError):
    """A flag needs a change to aiortc/aioice that was not written for the installed version."""


# ---- 1. marker-jitter-buffer (optimisation) ---------------------------------------------------------------
class MarkerJitterBuffer(JitterBuffer):
    """aiortc's buffer, plus: a complete frame ending in a marked packet is released right away.

    aiortc releases a video frame only when the first packet of the *next* frame arrives (it sees the end
    of a frame by a timestamp change): one camera frame interval (33 ms at 30 fps) on every frame. Senders
    mark a frame's last packet with the RTP marker bit (RFC 7741 for VP8, RFC 6184 for H.264), so a frame
    whose packets are all in, ending with a marked one, can go at once.
    """

    # Under loss (issue 15): aiortc re-sends a NACK only when a *new* gap appears, so a lost retransmission
    # stalls the buffer until the next loss (~1 s at 5 %), and afterwards it releases one frame per packet,
    # so the stall stays as latency for the rest of the call. A head gap older than MAX_STALL_S of RTP time
    # is dropped instead: the buffer jumps to the newest frame and asks for a keyframe (PLI).
    MAX_STALL_S = 0.25

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli_flag, frame = super().add(packet)
        if frame is None and self._is_video and self._origin is not None:
            frame = self._pop_complete_head()
            if frame is None and self._stalled(packet):
                self._skip_to(packet.timestamp)  # give up on the lost packet: newest frame, and a keyframe
                pli_flag = True
                frame = self._pop_complete_head()
        return pli_flag, frame

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


def _names(function: Any) -> set[str]:
    """Every attribute and global name `function`'s code uses (nested comprehensions included)."""
    names: set[str] = set()
    todo = [function.__code__]
    while todo:
        code = todo.pop()
        names.update(code.co_names)
        todo += [c for c in code.co_consts if inspect.iscode(c)]
    return names


def _probe_jitter() -> str | None:
    names = _names(JitterBuffer.__init__) | _names(JitterBuffer._remove_frame)
    missing = {"_packets", "_origin", "_capacity", "_is_video", "_data"} - names
    if missing:
        return f"JitterBuffer no longer has {sorted(missing)}"
    if jitterbuffer.JitterBuffer is not JitterBuffer or rtcrtpreceiver.JitterBuffer not in (
        JitterBuffer,
        MarkerJitterBuffer,
    ):
        return "aiortc.rtcrtpreceiver no longer builds aiortc.jitterbuffer.JitterBuffer"
    if "JitterBuffer" not in _names(RTCRtpReceiver.__init__):
        return "RTCRtpReceiver.__init__ no longer makes its jitter buffer"
    return None


def _apply_jitter(config: Any) -> None:
    rtcrtpreceiver.JitterBuffer = MarkerJitterBuffer


# ---- 2. media-port-range (--media-ports) ------------------------------------------------------------------
class PortRangeConnection(aioice.ice.Connection):
    """aioice's Connection whose host candidates use the current `media_ports.PortPool` (none current: plain
    aioice). aioice binds its host sockets to port 0 in `get_component_candidates`; that one method is the seam.
    Host sockets are bound to one port of the range (the same port number on every interface address), then
    server-reflexive candidates are asked for those sockets, and the TURN allocation is left to aioice."""

    async def get_component_candidates(self, component: int, addresses: list[str], timeout: int = 5):
        pool = media_ports.CURRENT_POOL.get()
        if pool is None or not addresses:
            return await super().get_component_candidates(component, addresses, timeout)
        bound = await pool.bind(addresses, lambda: aioice.ice.StunProtocol(self))
        candidates: list[Candidate] = []
        protocols = []
        for transport, protocol in bound:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE)
            host, port = transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            candidates.append(protocol.local_candidate)
            protocols.append(protocol)
        self._protocols += protocols
        # Server-reflexive candidates of these sockets, and (by aioice, with no host addresses) the TURN relay.
        reflexive = []
        if self.stun_server:
            reflexive = [
                asyncio.create_task(aioice.ice.server_reflexive_candidate(p, self.stun_server))
                for p in protocols
                if ":" not in p.local_candidate.host
            ]
        relayed = await super().get_component_candidates(component, [], timeout)
        if reflexive:
            done, pending = await asyncio.wait(reflexive, timeout=timeout)
            candidates += [t.result()[0] for t in done if t.exception() is None]
            for task in pending:
                task.cancel()
        return candidates + relayed


def _probe_media_ports() -> str | None:
    base = aioice.ice.Connection
    params = list(inspect.signature(base.get_component_candidates).parameters)
    if params[:4] != ["self", "component", "addresses", "timeout"]:
        return f"aioice Connection.get_component_candidates{tuple(params)} is not the one it overrides"
    if "_protocols" not in _names(base.__init__):
        return "aioice Connection no longer keeps _protocols"
    if not all(hasattr(aioice.ice, n) for n in ("StunProtocol", "server_reflexive_candidate")):
        return "aioice.ice no longer has StunProtocol / server_reflexive_candidate"
    if aiortc.rtcicetransport.Connection not in (base, PortRangeConnection):
        return "aiortc's ICE gatherer no longer builds aioice.Connection"
    return None


def _apply_media_ports(config: Any) -> None:
    aiortc.rtcicetransport.Connection = PortRangeConnection


# ---- 3. bitrate-cap (--max-bitrate) -----------------------------------------------------------------------
_BITRATE_GLOBALS = ("DEFAULT_BITRATE", "MIN_BITRATE", "MAX_BITRATE")


def _probe_bitrate() -> str | None:
    for module in (vpx, h264):
        if not all(isinstance(getattr(module, n, None), int) for n in _BITRATE_GLOBALS):
            return f"{module.__name__} no longer has {_BITRATE_GLOBALS}"
    return None


def _apply_bitrate(config: Any) -> None:
    """aiortc's VP8/H.264 encoders start at DEFAULT_BITRATE and clamp REMB to [MIN, MAX]: lower all three.
    Process-wide (aiortc reads module globals; it has no per-sender encoder parameters)."""
    cap = int(config.max_bitrate)
    for module in (vpx, h264):
        module.MAX_BITRATE = min(module.MAX_BITRATE, cap)
        module.MIN_BITRATE = min(module.MIN_BITRATE, module.MAX_BITRATE)
        module.DEFAULT_BITRATE = min(module.DEFAULT_BITRATE, module.MAX_BITRATE)


# ---- 4. keyframe-on-join (optimisation) -------------------------------------------------------------------
def _probe_keyframe() -> str | None:
    method = getattr(RTCRtpSender, "_send_keyframe", None)
    if method is None or "_RTCRtpSender__force_keyframe" not in _names(method):
        return "RTCRtpSender._send_keyframe (the PLI/FIR hook) is gone or changed"
    return None


def request_keyframe(pc: RTCPeerConnection) -> bool:
    """The next frame of every video sender of `pc` is a keyframe (a viewer joined or resumed: it starts on a
    picture, not on the PLI round trip). aiortc has no public call: `_send_keyframe` is what its own PLI/FIR
    handling runs. Returns False when the patch is not active (the viewer's PLI still gets a keyframe)."""
    if "keyframe-on-join" not in ACTIVE:
        return False
    for sender in pc.getSenders():
        if sender.track is not None and sender.track.kind == "video":
            sender._send_keyframe()
    return True


# ---- 5. receiver-ssrc-counters (monitoring) ---------------------------------------------------------------
_REMOTE_STREAMS = "_RTCRtpReceiver__remote_streams"


def _probe_counters() -> str | None:
    if _REMOTE_STREAMS not in _names(RTCRtpReceiver.__init__):
        return "RTCRtpReceiver no longer keeps per-SSRC stream statistics"
    return None


async def inbound_video(pc: RTCPeerConnection) -> tuple[int, int, int]:
    """(packets received, packets lost, jitter) over every SSRC of `pc`'s video receivers.

    aiortc's `RTCRtpReceiver.getStats()` gives all SSRCs of a receiver one stats id, so once a
    retransmission (RTX) stream exists, its counters replace the media stream's in the report. The
    per-SSRC counters aiortc keeps are summed instead; without this patch, the public report is used
    (right until the first retransmission)."""
    received = lost = jitter = 0
    for receiver in pc.getReceivers():
        if receiver.track is None or receiver.track.kind != "video":
            continue
        if "receiver-ssrc-counters" in ACTIVE:
            streams = list((getattr(receiver, _REMOTE_STREAMS, None) or {}).values())
            counters = [(s.packets_received, s.packets_lost, s.jitter) for s in streams]
        else:
            report = await receiver.getStats()
            counters = [
                (s.packetsReceived, s.packetsLost, s.jitter) for s in report.values() if s.type == "inbound-rtp"
            ]
        for got, missed, jit in counters:
            received += int(got or 0)
            lost += max(0, int(missed or 0))
            jitter = max(jitter, int(jit or 0))
    return received, lost, jitter


# ---- the table, and install ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Patch:
    name: str
    why: str
    touches: tuple[str, ...]  # the third-party internals it replaces or reads
    written_for: tuple[str, ...]  # the packages (of WRITTEN_FOR) whose internals it depends on
    optional: bool  # True: an optimisation or a monitoring read; the server runs without it
    probe: Callable[[], str | None]  # None when the internals are the ones it expects, else what differs
    apply: Callable[[Any], None]
    wanted: Callable[[Any], bool] = lambda config: True  # whether this config uses it


PATCHES: tuple[Patch, ...] = (
    Patch(
        "marker-jitter-buffer",
        "a video frame leaves the jitter buffer at its marked last packet, one frame interval sooner",
        ("aiortc.rtcrtpreceiver.JitterBuffer (replaced)", "JitterBuffer._packets/_origin/_capacity/_is_video"),
        ("aiortc",),
        True,
        _probe_jitter,
        _apply_jitter,
    ),
    Patch(
        "media-port-range",
        "--media-ports: ICE host candidates bind the configured UDP ports (a firewall opens only those)",
        ("aiortc.rtcicetransport.Connection (replaced)", "aioice Connection.get_component_candidates, _protocols"),
        ("aiortc", "aioice"),
        False,
        _probe_media_ports,
        _apply_media_ports,
        lambda config: bool(getattr(config, "media_ports", None)),
    ),
    Patch(
        "bitrate-cap",
        "--max-bitrate: the encoders' start, floor and ceiling bitrates (REMB moves within them)",
        ("aiortc.codecs.vpx/h264 DEFAULT_BITRATE, MIN_BITRATE, MAX_BITRATE (module globals)",),
        ("aiortc",),
        False,
        _probe_bitrate,
        _apply_bitrate,
        lambda config: bool(getattr(config, "max_bitrate", None)),
    ),
    Patch(
        "keyframe-on-join",
        "a viewer that joins or resumes an existing output starts on a keyframe, without a PLI round trip",
        ("RTCRtpSender._send_keyframe (called)",),
        ("aiortc",),
        True,
        _probe_keyframe,
        lambda config: None,
    ),
    Patch(
        "receiver-ssrc-counters",
        "the stats message's packets_in/lost_in count every SSRC (media and RTX), not the last one aiortc reports",
        ("RTCRtpReceiver.__remote_streams (read)",),
        ("aiortc",),
        True,
        _probe_counters,
        lambda config: None,
    ),
)

ACTIVE: set[str] = set()  # names of the patches in place in this process


def installed_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in WRITTEN_FOR}


@dataclass
class Report:
    active: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why the server runs without it
    unused: list[str] = field(default_factory=list)  # not asked for by this config

    def as_dict(self) -> dict[str, Any]:
        return {"active": self.active, "skipped": self.skipped, "unused": self.unused, "written_for": WRITTEN_FOR}


def mismatch(patch: Patch, versions: dict[str, str]) -> str | None:
    """Why `patch` does not fit these versions (None when it does)."""
    other = [f"{pkg} {versions.get(pkg)}" for pkg in patch.written_for if versions.get(pkg) != WRITTEN_FOR[pkg]]
    if other:
        wanted = ", ".join(f"{pkg} {WRITTEN_FOR[pkg]}" for pkg in patch.written_for)
        return f"written for {wanted}, installed: {', '.join(other)}"
    return patch.probe()


def plan(config: Any, versions: dict[str, str] | None = None) -> Report:
    """What `install` would do with `config` on `versions` (the installed ones by default); raises PatchRefused."""
    versions = installed_versions() if versions is None else versions
    report = Report()
    for patch in PATCHES:
        if not patch.wanted(config):
            report.unused.append(patch.name)
            continue
        reason = mismatch(patch, versions)
        if reason is None:
            report.active.append(patch.name)
        elif patch.optional:
            report.skipped[patch.name] = f"running without {patch.name} ({patch.why}): {reason}"
        else:
            raise PatchRefused(
                f"the {patch.name} change to aiortc/aioice ({patch.why}) does not fit this install: {reason}. "
                "Install the pinned versions (pip install -e .) or leave out the flag that needs it."
            )
    return report


def install(config: Any, versions: dict[str, str] | None = None) -> Report:
    """Put in place every patch `config` uses, once per process (idempotent); the one place that applies them."""
    report = plan(config, versions)
    by_name = {p.name: p for p in PATCHES}
    for name in report.active:
        by_name[name].apply(config)
        ACTIVE.add(name)
    for name, reason in report.skipped.items():
        ACTIVE.discard(name)
        log.warning("%s", reason)
    return report
