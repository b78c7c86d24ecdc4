"""Speech test data made on the spot with espeak-ng, plus generated silence and noise.

espeak-ng is a formant synthesiser: robotic, but real speech audio that Whisper has
never seen, with several voices. The sentences are prompt-like and were chosen to be
understandable in espeak's voices (its "the weather is nice today" comes out as
"but whenever is ice today" even to a human ear).
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
import wave
from pathlib import Path

import jiwer
import numpy as np

from speakdraw.speech.audio import resample

VOICES = ("en-us", "en-gb-x-rp", "en+f3")
SENTENCES = (
    "please paint a picture of the ocean",
    "I would like a painting of a big red house",
    "turn the sky into a beautiful sunset",
    "show me a castle on top of a hill",
    "this is a test of the speech recognition system",
    "make everything look like an old photograph",
    "the quick brown fox jumps over the lazy dog",
)

# Issue 22 (vocabulary biasing, spoken commands). TUNE_PROMPTS are what the bias text and the
# guard's biased rules were tuned on (with SENTENCES); HELD_OUT_PROMPTS were written before any of
# that and never looked at while tuning: their WER is the honest one (bench/speech.py --wer).
TUNE_PROMPTS = (
    "a watercolor painting of a dragon",
    "a watercolor painting of a cat",
    "an oil painting of a ship in a storm",
    "a charcoal drawing of an old man",
    "make it look like an anime scene",
    "a pixel art castle",
    "a cyberpunk city at night",
    "a black cat sitting on a fence",
    "a forest covered in snow",
    "paint me like a comic book hero",
    "a pencil sketch of a horse",
    "an impressionist garden with water lilies",
)
HELD_OUT_PROMPTS = (
    "a lighthouse on a rocky shore at dawn",
    "paint my room like a jungle full of birds",
    "give the picture a soft blue glow",
    "a dragon flying over snowy mountains",
    "turn me into a marble statue",
    "draw a small boat on a calm lake",
    "a garden of yellow flowers in spring",
    "make it look like a comic book",
    "a pastel drawing of a sleeping fox",
    "an ink sketch of a mountain village",
    "a mosaic of a peacock in gold and blue",
    "a stained glass window with a red rose",
    "a gouache illustration of a rainy street",
    "a steampunk robot drinking tea",
    "a portrait of a queen in the style of rembrandt",
    "a neon sign glowing in the fog",
    "an abstract painting full of bright colors",
    "a sepia photograph of a train station",
    "a fantasy map with castles and rivers",
    "a crayon drawing of a happy sun",
)
COMMAND_PHRASES = (
    "new seed",
    "stronger",
    "weaker",
    "only me",
    "whole picture",
    "stop listening",
    "start listening",
    "next style",
    "previous style",
    "style seven",
    "make it stronger",
    "just me",
)


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=256)
def _espeak_native(text: str, voice: str, speed: int) -> tuple[bytes, int]:
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True, check=True, timeout=60
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        return w.readframes(w.getnframes()), w.getframerate()


def espeak(text: str, voice: str = "en-us", speed: int = 140, rate: int = 16000) -> np.ndarray:
    """Speech for `text` as float32 mono at `rate`, no leading/trailing silence added."""
    frames, native = _espeak_native(text, voice, speed)
    return resample(np.frombuffer(frames, np.int16), native, rate)


def add_noise(
    audio: np.ndarray, snr_db: float, speech: np.ndarray | None = None, kind: str = "pink", seed: int = 0, rate=16000
) -> np.ndarray:
    """`audio` plus generated noise `snr_db` below the power of `speech` (default: `audio`), voiced part only."""
    ref = audio if speech is None else speech
    voiced = ref[np.abs(ref) > 1e-3]
    power = float(np.mean(voiced.astype(np.float64) ** 2)) if len(voiced) else 1e-8
    level = float(np.sqrt(power / 10 ** (snr_db / 10)))
    extra = noise(kind, (len(audio) + 1) / rate, rate=rate, level=level, seed=seed)[: len(audio)]
    mixed = audio + np.pad(extra, (0, len(audio) - len(extra)))
    return np.clip(mixed, -1, 1).astype(np.float32)


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.float32)


def noise(kind: str, seconds: float, rate: int = 16000, level: float = 0.1, seed: int = 0) -> np.ndarray:
    """Generated non-speech: white, pink (1/f), brown, hum (50 Hz mains and harmonics)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind in ("pink", "brown"):
        spectrum = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / rate)
        f[0] = f[1]
        spectrum /= np.sqrt(f) if kind == "pink" else f
        x = np.fft.irfft(spectrum, n)
    elif kind == "hum":
        t = np.arange(n) / rate
        x = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3, 5)) + 0.05 * rng.standard_normal(n)
    else:
        raise ValueError(kind)
    x = x / (np.sqrt(np.mean(x**2)) + 1e-12) * level
    return np.clip(x, -1, 1).astype(np.float32)


def speech_track(
    items: list[tuple[str, str]], gap_s: float = 1.5, lead_s: float = 0.5, rate: int = 16000, speed: int = 140
) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """(text, voice) pairs spoken one after the other with silence between → audio, [(text, start_s, end_s)]."""
    parts, spans, t = [silence(lead_s, rate)], [], lead_s
    for text, voice in items:
        speech = espeak(text, voice, speed, rate)
        spans.append((text, t, t + len(speech) / rate))
        parts += [speech, silence(gap_s, rate)]
        t += len(speech) / rate + gap_s
    return np.concatenate(parts), spans


def voiced_spans(audio: np.ndarray, rate: int, frame_ms: float = 10.0, gap_s: float = 0.5) -> list[tuple[float, float]]:
    """Voiced stretches from the samples: 10 ms frames above −40 dB of the loudest, gaps < `gap_s` bridged."""
    size = int(rate * frame_ms / 1000)
    n = len(audio) // size
    rms = np.sqrt(np.mean(audio[: n * size].reshape(n, size).astype(np.float64) ** 2, axis=1))
    voiced = np.flatnonzero(rms > rms.max() * 10 ** (-40 / 20))
    spans: list[list[float]] = []
    for i in voiced:
        start, end = float(i * frame_ms / 1000), float((i + 1) * frame_ms / 1000)
        if spans and start - spans[-1][1] < gap_s:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return [(a, b) for a, b in spans]


def to_int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1, 1) * 32767).astype(np.int16)


def write_wav(path: Path, audio: np.ndarray, rate: int = 16000, channels: int = 1) -> Path:
    pcm = to_int16(audio)
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, axis=1).reshape(-1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def encode(path_wav: Path, out: Path) -> Path:
    """Re-encode a wav with ffmpeg (ogg/opus, webm/opus, mp3 by extension)."""
    codec = {".ogg": ["-c:a", "libopus"], ".webm": ["-c:a", "libopus"], ".mp3": ["-c:a", "libmp3lame"]}[out.suffix]
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(path_wav), *codec, str(out)], check=True)
    return out


def words(text: str) -> str:
    """Lowercase words, punctuation dropped: what WER compares."""
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus word error rate after normalisation (an empty hypothesis counts every word as deleted)."""
    refs = [words(r) for r in references]
    hyps = [words(h) for h in hypotheses]
    return float(jiwer.wer(refs, hyps))


class PcmAudioTrack:
    """An aiortc audio track (a fake microphone) that plays `audio` in real time, then silence.

    48 kHz s16 mono, 20 ms frames, paced by the wall clock like a real mic; `done` is set
    once the last sample of `audio` has been sent.
    """

    def __new__(cls, *args, **kwargs):
        from aiortc import MediaStreamTrack

        class _Track(MediaStreamTrack):
            kind = "audio"

            def __init__(self, audio: np.ndarray, rate: int = 48000, frame_ms: int = 20) -> None:
                import asyncio

                super().__init__()
                self.pcm = to_int16(audio)
                self.rate = rate
                self.samples = rate * frame_ms // 1000
                self.sent = 0
                self.done = asyncio.Event()
                self._start: float | None = None

            async def recv(self):
                import asyncio
                import fractions
                import time

                from av import AudioFrame

                if self._start is None:
                    self._start = time.monotonic()
                delay = self._start + self.sent / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                chunk = self.pcm[self.sent : self.sent + self.samples]
                if len(chunk) < self.samples:
                    chunk = np.concatenate([chunk, np.zeros(self.samples - len(chunk), np.int16)])
                frame = AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
                frame.sample_rate = self.rate
                frame.pts = self.sent
                frame.time_base = fractions.Fraction(1, self.rate)
                self.sent += self.samples
                if self.sent >= len(self.pcm):
                    self.done.set()
                return frame

        return _Track(*args, **kwargs)
