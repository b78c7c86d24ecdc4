"""The server's one PCM path: anything PyAV can decode → float32 mono 16 kHz for speech.

Both the call's microphone frames (`server/call_speech.py`) and uploaded files
(`server/routes/transcribe.py`) go through `PcmConverter`, one streaming PyAV resampler
(FFmpeg's swr: proper low-pass, any rate/layout/sample format in). `speakdraw` keeps
its own numpy resampler only for callers without av (a notebook feeding a 22.05 kHz
array into `Transcriber.feed`).
"""

from __future__ import annotations

import io

import av
import numpy as np

SPEECH_RATE = 16000
MAX_DURATION_S = 600.0


class NotAudio(Exception):
    """The bytes are not a decodable audio file (the message says why)."""


class TooLong(Exception):
    """The audio is longer than the caller's limit."""


class PcmConverter:
    """Streaming: `av.AudioFrame`s of any format/rate/layout → float32 mono at `rate`."""

    def __init__(self, rate: int = SPEECH_RATE) -> None:
        self.rate = rate
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)

    def convert(self, frame: av.AudioFrame | None) -> np.ndarray:
        """One frame in (None = flush what the resampler holds) → the samples ready now."""
        outs = [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        if not outs:
            return np.zeros(0, np.float32)
        return (outs[0] if len(outs) == 1 else np.concatenate(outs)).astype(np.float32, copy=False)


def decode_audio(data: bytes, max_duration_s: float = MAX_DURATION_S) -> np.ndarray:
    """Any FFmpeg-readable audio file → float32 mono 16 kHz. Raises NotAudio / TooLong."""
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise NotAudio(f"not a readable audio file ({type(exc).__name__})") from exc
    with container:
        if not container.streams.audio:
            raise NotAudio("the file has no audio stream")
        converter = PcmConverter()
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(container.streams.audio[0]):
                chunk = converter.convert(frame)
                chunks.append(chunk)
                total += len(chunk)
                if total > max_duration_s * SPEECH_RATE:
                    raise TooLong(f"audio longer than {max_duration_s:g} s")
            chunks.append(converter.convert(None))
        except (av.FFmpegError, ValueError) as exc:
            if not any(len(c) for c in chunks):
                raise NotAudio(f"cannot decode the audio ({type(exc).__name__})") from exc
            # a truncated file: keep what decoded
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
