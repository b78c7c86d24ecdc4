"""`POST /api/transcribe`: an uploaded audio file → its text.

The body is a multipart form with a `file` field, or the raw file. It is read in
chunks and refused (413) as soon as it passes the upload limit
(`config.max_upload_bytes`, default 10 MB) — never buffered whole first. PyAV
decodes whatever FFmpeg can (wav, ogg/opus, webm, mp3, flac, m4a...) to 16 kHz mono;
decoding and Whisper both run in the default executor, never on the event loop, and
the STT model is shared (and serialised) with the live calls.

Response: `{"text", "language", "duration_s", "latency_s", "segments": [...]}`.
Errors: 400 `empty_file` / `empty_audio`, 413 `too_large` / `too_long`, 415
`unsupported_media_type` (not audio), 503 `stt_unavailable` (`--stt off`).
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import av
import numpy as np
from aiohttp import web

from server.errors import json_error
from server.state import STATE
from server.uploads import Refused, read_upload
from speakdraw.speech.guard import rejection
from speakdraw.speech.stt import Transcript

MAX_DURATION_S = 600.0


class NotAudio(Exception):
    pass


class TooLong(Exception):
    pass


def decode_audio(data: bytes, max_duration_s: float = MAX_DURATION_S) -> np.ndarray:
    """Any FFmpeg-readable audio → float32 mono 16 kHz. Raises NotAudio / TooLong."""
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise NotAudio(f"not a readable audio file ({type(exc).__name__})") from exc
    with container:
        if not container.streams.audio:
            raise NotAudio("the file has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    total += len(chunk)
                if total > max_duration_s * 16000:
                    raise TooLong(f"audio longer than {max_duration_s:g} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except (av.FFmpegError, ValueError) as exc:
            if not chunks:
                raise NotAudio(f"cannot decode the audio ({type(exc).__name__})") from exc
            # a truncated file: keep what decoded
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


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
    limit = state.config.max_upload_bytes
    stt = state.stt
    if stt is None:
        return json_error(503, "stt_unavailable", "speech-to-text is off or still loading on this server")
    try:
        data = await read_upload(request, limit, "an audio file")
    except Refused as exc:
        return json_error(exc.status, exc.code, exc.message)
    if not data:
        return json_error(400, "empty_file", "the uploaded file is empty")
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    try:
        audio = await loop.run_in_executor(state.workers.io, decode_audio, data)
    except NotAudio as exc:
        return json_error(415, "unsupported_media_type", f"{exc}; send wav, ogg/opus, webm or mp3")
    except TooLong as exc:
        return json_error(413, "too_long", str(exc))
    if len(audio) < 160:  # under 10 ms
        return json_error(400, "empty_audio", "the file holds no audio samples")
    try:
        transcript = await loop.run_in_executor(state.workers.io, stt.transcribe, audio)
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
