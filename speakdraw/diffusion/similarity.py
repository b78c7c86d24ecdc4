"""Skip near-identical camera frames without ever blocking the worker.

StreamDiffusion's own filter is random (it skips with a probability) and, when it
skips, sleeps for the model's average frame time to keep a steady rate. In a call
the worker thread serves every session on the device, so a sleep stalls everyone:
here a skipped frame returns the previous output at once, and the decision is a
deterministic threshold on cosine similarity, so a test can predict it.
"""

from __future__ import annotations

import numpy as np

# Compare a ~64-pixel-wide thumbnail: enough to see motion, far cheaper than the model.
THUMB_WIDTH = 64


class FrameSimilarity:
    """Cosine similarity of a centred thumbnail against the last frame that was processed."""

    def __init__(self, threshold: float, max_skip: int = 10) -> None:
        self.threshold = threshold
        self.max_skip = max_skip  # after this many skips in a row, process anyway (slow drift)
        self._ref: np.ndarray | None = None
        self._skipped = 0

    def _thumb(self, rgb: np.ndarray) -> np.ndarray:
        step = max(1, rgb.shape[1] // THUMB_WIDTH)
        return rgb[::step, ::step].astype(np.float32).ravel() / 127.5 - 1.0

    def similarity(self, rgb: np.ndarray) -> float | None:
        """Similarity to the reference frame, or None when there is none of this size."""
        if self._ref is None:
            return None
        thumb = self._thumb(rgb)
        if thumb.shape != self._ref.shape:
            return None
        denom = float(np.linalg.norm(thumb) * np.linalg.norm(self._ref))
        return float(thumb @ self._ref) / denom if denom > 1e-6 else 1.0

    def should_skip(self, rgb: np.ndarray) -> bool:
        """True: reuse the previous output. False: process `rgb` (it becomes the reference)."""
        sim = self.similarity(rgb)
        if sim is not None and sim >= self.threshold and self._skipped < self.max_skip:
            self._skipped += 1
            return True
        self._ref = self._thumb(rgb)
        self._skipped = 0
        return False
