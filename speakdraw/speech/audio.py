"""PCM helpers: any int16/float PCM, any rate, mono or interleaved → float32 mono at 16 kHz.

Whisper and Silero VAD both want 16 kHz mono float32. The server gets its audio already
resampled by PyAV (`server/call_speech.py`), but `speakdraw` must not import av, so callers
from a notebook or a test (espeak-ng at 22.05 kHz, a 48 kHz wav) use this streaming
resampler: a windowed-sinc low-pass (no aliasing when going down from 48 kHz) then
linear interpolation, with state carried across chunks so chunked output matches
one-shot output.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000


def to_float32(pcm: np.ndarray) -> np.ndarray:
    """int16/int32/uint8 PCM → float32 in [-1, 1]; float input passes through as float32."""
    pcm = np.asarray(pcm)
    if pcm.dtype == np.int16:
        return pcm.astype(np.float32) / 32768.0
    if pcm.dtype == np.int32:
        return pcm.astype(np.float32) / 2147483648.0
    if pcm.dtype == np.uint8:
        return (pcm.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(pcm.dtype, np.floating):
        return pcm.astype(np.float32, copy=False)
    raise TypeError(f"unsupported PCM dtype {pcm.dtype}")


def to_mono(pcm: np.ndarray, channels: int = 1) -> np.ndarray:
    """Average the channels. 1-D input is interleaved (`channels` per frame); 2-D is (frames, channels)."""
    pcm = np.asarray(pcm)
    if pcm.ndim == 2:
        return pcm.mean(axis=1, dtype=np.float32) if pcm.shape[1] > 1 else pcm[:, 0]
    if pcm.ndim != 1:
        raise ValueError("PCM must be 1-D (interleaved) or 2-D (frames, channels)")
    if channels <= 1:
        return pcm
    usable = len(pcm) - len(pcm) % channels
    return pcm[:usable].reshape(-1, channels).mean(axis=1, dtype=np.float32)


def lowpass_taps(cutoff: float, taps: int = 95) -> np.ndarray:
    """Windowed-sinc (Blackman) low-pass FIR; `cutoff` in cycles per input sample (< 0.5)."""
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.blackman(taps)
    return (h / h.sum()).astype(np.float32)


class Resampler:
    """Streaming float32 resampler from `in_rate` to `out_rate` (default 16 kHz).

    Delay: (taps - 1) / 2 input samples when downsampling (under 1 ms at 48 kHz).
    """

    def __init__(self, in_rate: int, out_rate: int = SAMPLE_RATE, taps: int = 95) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self.step = self.in_rate / self.out_rate  # input samples per output sample
        self._taps = lowpass_taps(0.45 / self.step, taps) if self.step > 1 else None
        self._history = np.zeros(taps - 1 if self._taps is not None else 0, np.float32)
        self._prev = np.float32(0.0)  # last filtered sample of the previous chunk
        self._pos = 0.0  # where the next output sample falls, in input samples from this chunk's start

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        x = to_float32(chunk)
        if self.in_rate == self.out_rate:
            return x
        if len(x) == 0:
            return np.zeros(0, np.float32)
        if self._taps is not None:
            joined = np.concatenate([self._history, x])
            filtered = np.convolve(joined, self._taps, mode="valid").astype(np.float32)
            self._history = joined[len(joined) - len(self._history) :]
        else:
            filtered = x
        # y[0] is the previous chunk's last sample, at input position -1.
        y = np.concatenate([[self._prev], filtered])
        last = len(filtered) - 1
        count = int(np.floor((last - self._pos) / self.step)) + 1 if self._pos <= last else 0
        positions = self._pos + self.step * np.arange(count)
        out = np.interp(positions + 1.0, np.arange(len(y)), y).astype(np.float32)
        self._pos = self._pos + self.step * count - len(filtered)
        self._prev = filtered[-1]
        return out


def resample(pcm: np.ndarray, rate: int, out_rate: int = SAMPLE_RATE, channels: int = 1) -> np.ndarray:
    """One-shot: PCM (any dtype above, interleaved or 2-D) at `rate` → float32 mono at `out_rate`."""
    return Resampler(rate, out_rate)(to_mono(to_float32(pcm), channels))
