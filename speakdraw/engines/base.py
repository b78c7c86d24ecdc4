"""The engine interface: a shared, loaded-once model and its per-session streams.

Weights are shared by all sessions on a device; everything that carries state from
frame to frame (prompt embeddings, stream-batch buffers, noise) lives in an
`EngineSession`, so one call never leaks into another.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speakdraw.settings import Settings


class EngineUnavailable(RuntimeError):
    """The engine's weights or packages cannot be had here; the message says why and what to do."""


class ImagePromptUnavailable(RuntimeError):
    """This engine / model has no image prompts; the message says why (shown on the page, API 409)."""


@dataclass
class EngineOptions:
    """How to load an engine; filled from the command line (`speakdraw serve`)."""

    engine: str = "sd-turbo"
    model: str = "stabilityai/sd-turbo"
    device: str = "auto"
    acceleration: str = "none"
    use_taesd: bool = True
    simulate_cost_ms: float = 0.0  # artificial per-frame cost (overload tests and benches)
    extra: dict = field(default_factory=dict)


class EngineSession(ABC):
    """Per-session frame transform. Called from one worker thread at a time."""

    @abstractmethod
    def update(self, settings: Settings, changed: set[str]) -> None:
        """Apply new settings between frames; re-prepare only what `changed` needs."""

    @abstractmethod
    def process(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 in, HxWx3 uint8 out, same size."""

    def set_image_prompt(self, prompt: Any | None) -> None:
        """Use an image prompt made by `Engine.encode_image_prompt` (None clears it); between frames."""
        if prompt is not None:
            raise ImagePromptUnavailable("this engine has no image prompts")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release per-session buffers."""


class Engine(ABC):
    """A loaded model (or none); hands out per-session streams."""

    name: str = "engine"
    device: str = "cpu"
    model_id: str = ""

    @abstractmethod
    def new_session(self, settings: Settings) -> EngineSession: ...

    def features(self) -> dict[str, bool]:
        return {"diffusion": False, "image_prompt": False}

    def image_prompt_status(self) -> str | None:
        """None when image prompts work on this engine, else the reason they do not."""
        return f"the {self.name} engine does no diffusion, so it takes no image prompts"

    def process_batch(self, items: Sequence[tuple[EngineSession, np.ndarray]]) -> list[np.ndarray]:
        """One device step for the newest frame of several calls (all frames the same shape).

        The device runner calls this with one frame per session. Each output must be what
        `session.process(frame)` gives alone; engines that gain from batching (one UNet call
        across calls, one ONNX run) override it. Raises if the whole step fails.
        """
        return [session.process(frame) for session, frame in items]

    def warmup(self) -> None:  # noqa: B027 - optional hook
        """Compile / record what the first frames would (torch.compile, CUDA graphs). The server calls it on the
        device runner's thread, the thread every later step runs on: torch keeps CUDA-graph state per thread."""

    def encode_image_prompt(self, rgb: np.ndarray) -> Any:
        """Encode an HxWx3 uint8 image once (shared encoder); any session can then use the result."""
        raise ImagePromptUnavailable(self.image_prompt_status() or "no image prompts")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model."""
