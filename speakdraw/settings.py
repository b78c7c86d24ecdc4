"""Per-session settings: one pydantic model whose JSON schema the page builds its controls from.

Every field has bounds; out-of-range values are refused (ValidationError), never clamped.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SIDE = 1024
MIN_SIDE = 64


class Settings(BaseModel):
    """What one session's pipeline does to each frame and to each utterance."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    prompt: str = Field("a watercolor painting", max_length=1000, description="Text prompt")
    negative_prompt: str = Field("", max_length=1000, description="Negative prompt (used when cfg_type is not 'none')")
    mode: Literal["full", "human"] = Field("full", description="Repaint the whole frame or only the person")
    strength: float = Field(0.5, ge=0.0, le=1.0, description="How far the output may move from the camera frame")
    steps: int = Field(1, ge=1, le=4, description="Denoising steps in the stream batch")
    guidance_scale: float = Field(1.0, ge=0.0, le=20.0, description="Classifier-free guidance scale")
    delta: float = Field(1.0, ge=0.0, le=2.0, description="Residual noise multiplier of RCFG")
    cfg_type: Literal["none", "self", "initialize", "full"] = Field("none", description="StreamDiffusion CFG type")
    seed: int = Field(2, ge=0, le=2**31 - 1, description="Noise seed: same seed + input + settings = same output")
    similarity_filter: bool = Field(False, description="Skip near-identical frames")
    similarity_threshold: float = Field(0.98, ge=0.5, le=1.0, description="Similarity above which a frame is skipped")
    prompt_fade_frames: int = Field(8, ge=0, le=120, description="Frames over which a new prompt fades in (0 = jump)")
    voice_prompt: bool = Field(True, description="Spoken finals replace the prompt")
    voice_vocabulary: bool = Field(
        True, description="Bias speech recognition towards art words, the spoken commands and your typed prompts"
    )
    ip_adapter_scale: float = Field(0.6, ge=0.0, le=2.0, description="Weight of the image prompt (IP-Adapter)")
    matte_feather: int = Field(2, ge=0, le=32, description="Feather radius of the person matte, in pixels (human mode)")
    passthrough_effect: Literal["none", "invert"] = Field(
        "none",
        description="Cheap visible effect of the passthrough engine",
    )
    style: int = Field(
        -1,
        ge=-1,
        le=25,
        description="Style of the style engine: 0-25, or -1 to pick it from the prompt",
    )
    width: int = Field(512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="Processing width (multiple of 8)")
    height: int = Field(512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="Processing height (multiple of 8)")

    def updated(self, partial: dict[str, Any]) -> Settings:
        """A new Settings with `partial` applied, validated as a whole; raises ValidationError."""
        if not isinstance(partial, dict):
            raise TypeError("settings must be a JSON object")
        return Settings.model_validate({**self.model_dump(), **partial})

    def changed_fields(self, other: Settings) -> set[str]:
        mine, theirs = self.model_dump(), other.model_dump()
        return {key for key in mine if mine[key] != theirs[key]}


def settings_schema() -> dict[str, Any]:
    return Settings.model_json_schema()
