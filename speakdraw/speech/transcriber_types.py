"""What a `Transcriber` (speech/transcriber.py) takes, its options, and what it reports, its events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from speakdraw.speech.segmenter import SegmenterOptions

CAREFUL_POLICIES = ("doubtful", "always", "never")


@dataclass(frozen=True)
class TranscriptEvent:
    utterance: int
    text: str
    final: bool
    language: str = ""
    audio_s: float = 0.0  # utterance audio transcribed
    stt_s: float = 0.0  # time Whisper took
    latency_s: float = 0.0  # finals: last voiced audio fed → event; partials: newest audio fed → event
    revision: int = 0  # 1: the careful decode corrects this utterance's earlier final
    stages: dict[str, float] = field(default_factory=dict)  # finals: eos, wait, decode (ms)
    emitted_at: float = 0.0  # time.monotonic() when the speech thread reported it
    command: str = ""  # finals: the spoken command recognised in `text` (commands.COMMANDS key), if any

    def message(self) -> dict[str, Any]:
        """The data-channel `transcript` message (README.md, Data channel; `revised` only on a correction)."""
        out: dict[str, Any] = {"type": "transcript", "utterance": self.utterance, "text": self.text}
        out["final"] = self.final
        if self.revision:
            out["revised"] = True
        return out


@dataclass
class TranscriberOptions:
    segmenter: SegmenterOptions = field(default_factory=SegmenterOptions)
    partials: bool = True
    partial_interval_s: float = 0.5
    max_buffer_s: float = 10.0
    min_partial_speech_s: float = 0.3
    windowed: bool = True  # short-window decodes for partials and the fast final (stt.transcribe_window)
    final_beam: int = 5
    # Forcing the locally agreed words as the fast final's prefix: measured worse (held-out espeak
    # set, 24 utterances: WER 0.144 with it, 0.080 without) and no faster, since the cost is the
    # encoder, not the tokens. Partials still use it (their committed words never flicker).
    final_prefix: bool = False
    careful: str = "doubtful"  # when the 30 s decode runs: CAREFUL_POLICIES
    # Start the fast final's decode once this much silence follows speech, while the end rule
    # still runs; if no speech came since, the end reuses it (0 = wait for the end rule).
    speculate_after_ms: float = 96.0
