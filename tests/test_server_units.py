"""Small pieces of the shell: settings validation, control protocol, mailbox, certificates, tokens, banner."""

from __future__ import annotations

import asyncio
import json
import ssl
import stat

import pytest
from cryptography import x509
from pydantic import ValidationError

from server import control
from server.banner import banner
from server.certs import ensure_self_signed
from server.config import ServerConfig
from server.mailbox import Mailbox
from speakdraw import Pipeline, Settings


class Target:
    def __init__(self) -> None:
        self.pipeline = Pipeline(Settings())

    def update_settings(self, partial):
        return self.pipeline.update(partial).model_dump()


def test_settings_refuse_out_of_range_and_keep_old_values():
    s = Settings()
    for bad in [{"strength": -0.1}, {"steps": 5}, {"width": 513}, {"mode": "cartoon"}, {"seed": -1}, {"x": 1}]:
        with pytest.raises(ValidationError):
            s.updated(bad)
    assert s == Settings()
    assert s.updated({"strength": 0.9}).strength == 0.9


def test_control_messages():
    target = Target()
    assert control.handle_message("{", target, 1000)["code"] == "bad_json"
    assert control.handle_message(b"\x00", target, 1000)["code"] == "bad_message"
    assert control.handle_message("x" * 2000, target, 1000)["code"] == "too_large"
    assert control.handle_message('{"type":"what"}', target, 1000)["code"] == "unknown_type"
    reply = control.handle_message(json.dumps({"type": "settings", "settings": {"seed": 3}}), target, 1000)
    assert reply["type"] == "settings" and reply["settings"]["seed"] == 3
    reply = control.handle_message(json.dumps({"type": "settings", "settings": {"seed": 3, "steps": 0}}), target, 1000)
    assert reply["code"] == "invalid_settings" and "steps" in reply["message"]
    assert target.pipeline.current.seed == 3  # the refused message changed nothing


def test_pipeline_applies_settings_between_frames():
    import numpy as np

    p = Pipeline(Settings())
    frame = np.full((512, 512, 3), 10, np.uint8)
    assert p.process(frame)[0, 0, 0] == 10
    p.update({"passthrough_effect": "invert"})
    assert p.settings.passthrough_effect == "none"  # not yet: only at the next frame
    assert p.process(frame)[0, 0, 0] == 245
    out = p.process(np.zeros((480, 640, 3), np.uint8))
    assert out.shape == (512, 512, 3)


async def test_mailbox_keeps_only_the_newest():
    box: Mailbox[int] = Mailbox()
    for i in range(5):
        box.put(i)
    assert await box.get() == 4
    assert box.dropped == 4
    waiter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.put(9)
    assert await waiter == 9


async def test_a_closed_mailbox_ends_its_reader_and_a_whep_relay_track_ends_as_a_track():
    """A WHEP viewer's track ends with its session: recv raises MediaStreamError (before, the end sentinel None
    tripped the mailbox's assertion and aiortc logged an AssertionError from the sender)."""
    from aiortc.mediastreams import MediaStreamError

    from server.mailbox import MailboxClosed
    from server.routes.whip import RelayTrack

    box: Mailbox[int] = Mailbox()
    waiter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.close()
    with pytest.raises(MailboxClosed):
        await waiter
    track = RelayTrack()
    reader = asyncio.create_task(track.recv())
    await asyncio.sleep(0)
    track.end()
    with pytest.raises(MediaStreamError):
        await reader
    assert track.readyState == "ended"


def test_self_signed_certificate(tmp_path):
    cert, key = ensure_self_signed(tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    assert ensure_self_signed(tmp_path) == (cert, key)  # reused, not regenerated


def test_token_rules_and_banner():
    generated = ServerConfig(token="abc", token_explicit=False)
    assert not generated.token_required_on("127.0.0.1")
    assert generated.token_required_on("0.0.0.0")
    explicit = ServerConfig(token="abc", token_explicit=True)
    assert explicit.token_required_on("127.0.0.1")
    assert not ServerConfig().token_required_on("0.0.0.0")
    text = banner(ServerConfig(token="abc", https_port=8443), "passthrough", ["no weights"])
    assert "http://127.0.0.1:8080/" in text and ":8443/?token=abc" in text and "no weights" in text
    assert "█" in text or "▀" in text or "▄" in text  # the QR code


def test_pipeline_switches_engine_between_frames():
    """A call that joined while the model loaded moves to it at its next frame, keeping its settings."""
    import numpy as np

    from speakdraw.engines import EngineOptions, load_engine

    p = Pipeline(Settings(passthrough_effect="invert", width=64, height=64))
    frame = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(p.process(frame), 255 - frame)
    tiny, warnings = load_engine(EngineOptions(engine="tiny", device="cpu"))
    assert warnings == [] and tiny.name == "tiny"
    p.set_engine(tiny)
    assert p.engine.name == "passthrough"  # not before the next frame
    out = p.process(frame)
    assert p.engine is tiny and out.shape == frame.shape
    assert not np.array_equal(out, 255 - frame) and not np.array_equal(out, frame)
    assert p.settings.width == 64  # settings carried over


def test_a_stopped_server_whose_shutdown_hangs_exits_by_the_deadline():
    """`serve` arms `_exit_after(SHUTDOWN_DEADLINE_S)` when it stops: a cleanup that never returns (here: a sleep
    on the main thread) cannot keep the process, and so a cluster worker's restart, waiting."""
    import subprocess
    import sys
    import time

    code = "import time; from server.cli import _exit_after; _exit_after(0.3); time.sleep(30)"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert done.returncode == 1 and time.monotonic() - started < 15, done
    assert "shutdown took longer than" in done.stderr


async def test_a_whep_viewer_encodes_its_own_frame_not_the_calls():
    """Two encoders converting one VideoFrame at once share its one swscale context: a worker crashed with SIGSEGV
    when a WHEP viewer joined a call (tests/test_cluster.py). The viewer's track hands out its own frame, with the
    call's pixels and timing."""
    import fractions

    import numpy as np
    from av import VideoFrame

    from server.routes.whip import RelayTrack
    from server.tracks import OutFrame

    rgb = np.full((64, 96, 3), 77, np.uint8)
    call_frame = VideoFrame.from_ndarray(rgb, format="rgb24")
    call_frame.pts, call_frame.time_base = 1234, fractions.Fraction(1, 90000)
    track = RelayTrack()
    track.offer_frame(OutFrame(call_frame, 0.0, 0.0, 0.0, {}, rgb))
    mine = await track.recv()
    assert mine is not call_frame and mine.pts == 1234 and mine.time_base == call_frame.time_base
    assert np.array_equal(mine.to_ndarray(format="rgb24"), rgb)
