"""Human mode: put the repainted person back over the real background."""

from __future__ import annotations

import numpy as np


def feather(alpha: np.ndarray, radius: int) -> np.ndarray:
    """Soften the matte edge with a separable box blur of `radius` pixels (cumulative sums, O(pixels))."""
    if radius <= 0:
        return alpha
    size = 2 * radius + 1
    out = np.pad(alpha.astype(np.float32), radius, mode="edge")
    for axis in (0, 1):
        c = np.cumsum(out, axis=axis, dtype=np.float64)
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
        n = c.shape[axis]
        out = (np.take(c, range(size, n), axis=axis) - np.take(c, range(0, n - size), axis=axis)) / size
    return out.astype(np.float32)


def composite(foreground: np.ndarray, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """alpha·foreground + (1−alpha)·background, uint8 HxWx3 in and out, alpha float HxW in [0, 1]."""
    a = np.clip(alpha, 0.0, 1.0)[..., None].astype(np.float32)
    out = a * foreground.astype(np.float32) + (1.0 - a) * background.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
