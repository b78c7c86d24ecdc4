"""`POST /api/transcribe` on a small aiohttp app holding the real tiny.en STT."""

from __future__ import annotations

import io

import numpy as np
import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from server.config import ServerConfig
from server.pcm import decode_audio
from server.routes import transcribe
from server.state import STATE, AppState
from tests.speechdata import SENTENCES, encode, espeak, have_espeak, silence, wer, write_wav

pytestmark = [
    pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed"),
    pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning"),
]

LIMIT = 1_500_000


@pytest.fixture(scope="module")
def files(tmp_path_factory, stt):
    """The same sentence as wav 16 kHz mono, wav 48 kHz stereo, ogg/opus, webm/opus, mp3."""
    d = tmp_path_factory.mktemp("audio")
    speech = np.concatenate([silence(0.3, 48000), espeak(SENTENCES[5], "en-us", rate=48000), silence(0.3, 48000)])
    mono16 = np.concatenate([silence(0.3), espeak(SENTENCES[5], "en-us"), silence(0.3)])
    wav48 = write_wav(d / "s48.wav", speech, 48000, channels=2)
    out = {"wav": write_wav(d / "s16.wav", mono16, 16000), "wav48": wav48}
    for ext in ("ogg", "webm", "mp3"):
        out[ext] = encode(wav48, d / f"s.{ext}")
    return out


def _shutdown(state: AppState):
    async def stop(app: web.Application) -> None:
        state.workers.shutdown()

    return stop


def transcribe_app(stt, limit: int = LIMIT) -> web.Application:
    """Only the /api/transcribe route, on an AppState holding `stt`."""
    state = AppState(ServerConfig(max_upload_bytes=limit))
    state.stt = stt
    app = web.Application()
    app[STATE] = state
    transcribe.setup(app)
    app.on_cleanup.append(_shutdown(state))
    return app


@pytest.fixture
async def client(stt):
    async with TestClient(TestServer(transcribe_app(stt))) as c:
        yield c


@pytest.mark.parametrize("kind", ["wav", "wav48", "ogg", "webm", "mp3"])
async def test_speech_file_comes_back_as_text(client, files, kind):
    data = files[kind].read_bytes()
    form = FormData()
    form.add_field("file", data, filename=files[kind].name)
    resp = await client.post("/api/transcribe", data=form)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) >= {"text", "language", "duration_s", "latency_s"}
    assert body["language"] == "en"
    assert 2.0 < body["duration_s"] < 5.0
    assert body["latency_s"] > 0
    assert wer([SENTENCES[5]], [body["text"]]) <= 0.2, body["text"]


async def test_raw_body_works_too(client, files):
    resp = await client.post("/api/transcribe", data=files["ogg"].read_bytes(), headers={"Content-Type": "audio/ogg"})
    assert resp.status == 200
    assert wer([SENTENCES[5]], [(await resp.json())["text"]]) <= 0.2


async def test_silence_file_gives_empty_text(client, tmp_path):
    path = write_wav(tmp_path / "quiet.wav", silence(3.0))
    resp = await client.post("/api/transcribe", data=path.read_bytes())
    assert resp.status == 200 and (await resp.json())["text"] == ""


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "payload, status, code",
    [
        (b"", 400, "empty_file"),
        (b"this is plain text, not audio at all\n" * 20, 415, "unsupported_media_type"),
        ("png", 415, "unsupported_media_type"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", 415, "unsupported_media_type"),  # a truncated wav header
        (b"\x00" * (LIMIT + 1), 413, "too_large"),
    ],
)
async def test_bad_uploads_get_clear_4xx(client, payload, status, code):
    data = png_bytes() if payload == "png" else payload
    for multipart in (False, True):
        if multipart:
            form = FormData()
            form.add_field("file", data, filename="upload.bin")
            resp = await client.post("/api/transcribe", data=form)
        else:
            resp = await client.post("/api/transcribe", data=data)
        assert resp.status == status, (multipart, await resp.text())
        assert (await resp.json())["error"]["code"] == code


async def test_form_without_file_field_and_server_keeps_serving(client, files):
    form = FormData()
    form.add_field("other", b"123")
    resp = await client.post("/api/transcribe", data=form)
    assert resp.status == 400
    resp = await client.post("/api/transcribe", data=files["wav"].read_bytes())
    assert resp.status == 200


async def test_no_stt_is_503():
    async with TestClient(TestServer(transcribe_app(None))) as c:
        resp = await c.post("/api/transcribe", data=b"x")
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "stt_unavailable"


def test_decode_keeps_duration_and_rate(files):
    audio = decode_audio(files["wav48"].read_bytes())
    assert audio.dtype == np.float32
    expected = len(espeak(SENTENCES[5], "en-us")) / 16000 + 0.6
    assert abs(len(audio) / 16000 - expected) < 0.05


async def test_uploads_past_the_cap_get_429_busy_with_retry_after(client, files):
    """Issue 14 row 7: two uploads in progress (one transcribing, one queued); a third is refused."""
    import asyncio

    from server.routes.transcribe import UPLOADS_AT_ONCE

    data = files["wav"].read_bytes()

    async def post():
        resp = await client.post("/api/transcribe", data=data)
        return resp.status, resp.headers.get("Retry-After"), await resp.json()

    results = await asyncio.gather(*(post() for _ in range(UPLOADS_AT_ONCE + 2)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * UPLOADS_AT_ONCE + [429, 429], results
    for status, retry_after, body in results:
        if status == 429:
            assert body["error"]["code"] == "busy" and int(retry_after) > 0
    resp = await client.post("/api/transcribe", data=data)  # the slots are free again
    assert resp.status == 200
