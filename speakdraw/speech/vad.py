"""Silero VAD (the ONNX that ships inside faster-whisper), run as a stream.

`SileroVAD` holds the one shared ONNX session (thread-safe; single intra-op thread so
it never competes with the video worker for cores). Each call gets its own
`VadStream`, which carries the model's LSTM state and the 64-sample context between
chunks, so feeding 20 ms chunks gives the same probabilities as one long array.
The weights come from the registry (`speakdraw.weights.fetch("silero-vad")`, which
finds the file in the installed faster-whisper or `$SPEAKDRAW_VAD_PATH`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WINDOW = 512  # samples per probability at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the model sees in front of each window


def silero_vad_path() -> Path:
    from speakdraw import weights

    return weights.fetch("silero-vad", progress=False)


class SileroVAD:
    """The shared model. `stream()` makes per-session state."""

    def __init__(self, path: str | Path | None = None) -> None:
        import onnxruntime

        self.path = Path(path) if path is not None else silero_vad_path()
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(
            str(self.path), providers=["CPUExecutionProvider"], sess_options=opts
        )

    def stream(self) -> VadStream:
        return VadStream(self)


class VadStream:
    """Speech probabilities for consecutive 512-sample windows of one audio stream."""

    def __init__(self, model: SileroVAD) -> None:
        self.model = model
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)

    def probs(self, windows: np.ndarray) -> np.ndarray:
        """(k, 512) float32 windows at 16 kHz, in order → (k,) speech probabilities."""
        windows = np.asarray(windows, np.float32).reshape(-1, WINDOW)
        if len(windows) == 0:
            return np.zeros(0, np.float32)
        contexts = np.concatenate([self._context[None, :], windows[:-1, -CONTEXT:]], axis=0)
        batch = np.concatenate([contexts, windows], axis=1)
        out, self._h, self._c = self.model.session.run(None, {"input": batch, "h": self._h, "c": self._c})
        self._context = windows[-1, -CONTEXT:].copy()
        return np.asarray(out, np.float32).reshape(-1)
