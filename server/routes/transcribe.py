"""`POST /api/transcribe`: an uploaded audio file → its text.

The body is a multipart form with a `file` field, or the raw file. It is read in
chunks and refused (413) as soon as it passes the upload limit
(`config.max_upload_bytes`, default 10 MB) — never buffered whole first. PyAV
decodes whatever FFmpeg can (wav, ogg/opus, webm, mp3, flac, m4a...) to 16 kHz mono;
decoding (`server/pcm.py`, the server's one PCM path) and Whisper both run on the
`speakdraw-io` thread, never on the event loop, and the STT model is shared (and serialised) with the live calls.

Live speech has priority: an upload transcribes as background work (`background=True`:
it waits while a call's speech waits, and gives the model back after each 30 s
window). Uploads are capped: `UPLOADS_AT_ONCE` (2) in progress — one transcribing,
one waiting — per app (`AppState.uploads_in_progress`); one more gets 429 `busy` with
`Retry-After`. Audio is at most `config.max_transcribe_s` (default 600 s) long.

Response: `{"text", "language", "duration_s", "latency_s", "segments": [...]}`.
Errors: 400 `empty_file` / `empty_audio`, 413 `too_large` / `too_long`, 415
`unsupported_media_type` (not audio), 429 `busy`, 503 `stt_unavailable` (`--stt off`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from aiohttp import web

from server.errors import json_error
from server.pcm import NotAudio, TooLong, decode_audio
from server.state import STATE, AppState
from server.uploads import Refused, read_upload
from speakdraw.speech.guard import rejection
from speakdraw.speech.stt import SpeechToText, Transcript

UPLOADS_AT_ONCE = 2  # one transcribing, one queued behind it
RETRY_AFTER_S = 10


def _keep(transcript: Transcript) -> list[dict[str, Any]]:
    """Segments that pass the hallucination guard (segment length stands in for speech time)."""
    kept = []
    for seg in transcript.segments:
        one = Transcript(
            seg.text,
            transcript.language,
            seg.end - seg.start,
            seg.no_speech_prob,
            seg.avg_logprob,
            seg.compression_ratio,
        )
        if rejection(one, seg.end - seg.start) is None:
            kept.append({"start": round(seg.start, 2), "end": round(seg.end, 2), "text": seg.text.strip()})
    return kept


async def transcribe_handler(request: web.Request) -> web.Response:
    state = request.app[STATE]
    stt = state.stt
    if stt is None:
        return json_error(503, "stt_unavailable", "speech-to-text is off or still loading on this server")
    if state.uploads_in_progress >= UPLOADS_AT_ONCE:
        response = json_error(429, "busy", f"{UPLOADS_AT_ONCE} transcriptions are already in progress; retry later")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    state.uploads_in_progress += 1
    try:
        return await _transcribe(request, state, stt)
    finally:
        state.uploads_in_progress -= 1


async def _transcribe(request: web.Request, state: AppState, stt: SpeechToText) -> web.Response:
    limit, max_s = state.config.max_upload_bytes, state.config.max_transcribe_s
    try:
        data = await read_upload(request, limit, "an audio file")
    except Refused as exc:
        return json_error(exc.status, exc.code, exc.message)
    if not data:
        return json_error(400, "empty_file", "the uploaded file is empty")
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    try:
        audio = await loop.run_in_executor(state.workers.io, decode_audio, data, max_s)
    except NotAudio as exc:
        return json_error(415, "unsupported_media_type", f"{exc}; send wav, ogg/opus, webm or mp3")
    except TooLong as exc:
        return json_error(413, "too_long", str(exc))
    if len(audio) < 160:  # under 10 ms
        return json_error(400, "empty_audio", "the file holds no audio samples")
    try:
        transcript = await loop.run_in_executor(
            state.workers.io, functools.partial(stt.transcribe, audio, background=True)
        )
    except Exception as exc:  # a model failure is the server's fault, but must not look like a crash
        return json_error(500, "stt_failed", f"transcription failed: {type(exc).__name__}: {exc}")
    segments = _keep(transcript)
    return web.json_response(
        {
            "text": " ".join(s["text"] for s in segments if s["text"]),
            "language": transcript.language,
            "duration_s": round(len(audio) / 16000, 3),
            "latency_s": round(time.perf_counter() - start, 3),
            "segments": segments,
        }
    )


def setup(app: web.Application) -> None:
    app.router.add_post("/api/transcribe", transcribe_handler)
