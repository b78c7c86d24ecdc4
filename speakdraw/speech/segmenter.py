"""Cut a stream of VAD-scored windows into utterances.

An utterance starts at the first window whose speech probability reaches `threshold`
(with `pre_roll_ms` of audio kept from before it, so the first phoneme is not
clipped) and ends once `end_silence_ms` of windows in a row fall below
`neg_threshold` — the end-of-speech silence rule; windows between the two thresholds
count as speech (hysteresis). The rule adapts: `end_silence_ms` (short, 300 ms) until
the person has paused inside the utterance (a silent run of `pause_ms` or more, then
speech again), `end_silence_after_pause_ms` from then on (someone who pauses
mid-sentence gets more time to go on). The end keeps `post_roll_ms` of that silence. An
utterance with less than `min_speech_ms` of speech is discarded (a cough, a click);
one longer than `max_utterance_s` is cut there, so a monologue still gets finals.
Pure logic, no model: unit-testable with made-up probabilities.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from speakdraw.speech.audio import SAMPLE_RATE
from speakdraw.speech.vad import WINDOW

WINDOW_MS = WINDOW * 1000 / SAMPLE_RATE


@dataclass
class SegmenterOptions:
    threshold: float = 0.5
    neg_threshold: float = 0.35
    end_silence_ms: float = 300.0
    end_silence_after_pause_ms: float = 500.0
    pause_ms: float = 160.0
    min_speech_ms: float = 200.0
    pre_roll_ms: float = 300.0
    post_roll_ms: float = 200.0
    max_utterance_s: float = 20.0


@dataclass
class UtteranceEvent:
    """What `push` reports: `kind` is 'start', 'end' (audio = the utterance) or 'discard'."""

    kind: str
    utterance: int
    audio: np.ndarray | None = None
    speech_s: float = 0.0
    reason: str = ""
    speech_end: int = 0  # 'end': samples into the utterance where the closing silence began


def _windows(ms: float) -> int:
    return max(0, round(ms / WINDOW_MS))


class UtteranceSegmenter:
    def __init__(self, options: SegmenterOptions | None = None) -> None:
        self.options = options or SegmenterOptions()
        self._pre_roll: deque[np.ndarray] = deque(maxlen=max(1, _windows(self.options.pre_roll_ms)))
        self._audio: list[np.ndarray] = []
        self._speaking = False
        self._silence_run = 0
        self._voiced = 0
        self._paused = False  # a pause inside this utterance was seen: the longer end rule applies
        self._next_id = 0
        self.utterance = -1  # id of the current (or last) utterance

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def next_utterance(self) -> int:
        """The id the next utterance gets; a resumed call sets it so its utterance numbers continue."""
        return self._next_id

    @next_utterance.setter
    def next_utterance(self, value: int) -> None:
        self._next_id = int(value)

    @property
    def speech_s(self) -> float:
        """Voiced time in the current utterance."""
        return self._voiced * WINDOW_MS / 1000.0

    def current_audio(self) -> np.ndarray:
        """The utterance so far (for partial transcripts)."""
        return np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)

    @property
    def silence_ms(self) -> float:
        """How long the current utterance has been silent (0 while the person talks)."""
        return self._silence_run * WINDOW_MS

    @property
    def end_rule_ms(self) -> float:
        """The silence that ends the current utterance now (adaptive, see the module doc)."""
        o = self.options
        return max(o.end_silence_ms, o.end_silence_after_pause_ms) if self._paused else o.end_silence_ms

    @property
    def speech_end(self) -> int:
        """Samples into the current utterance where the present silence began (= current_samples while talking)."""
        return (len(self._audio) - self._silence_run) * WINDOW

    @property
    def current_samples(self) -> int:
        return len(self._audio) * WINDOW

    def push(self, window: np.ndarray, prob: float) -> list[UtteranceEvent]:
        """One 512-sample window and its speech probability → what happened."""
        o = self.options
        if not self._speaking:
            if prob >= o.threshold:
                self._speaking = True
                self.utterance = self._next_id
                self._next_id += 1
                self._audio = [*self._pre_roll, window]
                self._pre_roll.clear()
                self._silence_run = 0
                self._voiced = 1
                self._paused = False
                return [UtteranceEvent("start", self.utterance)]
            self._pre_roll.append(window)
            return []
        self._audio.append(window)
        if prob >= o.threshold:
            self._voiced += 1
        if prob < o.neg_threshold:
            self._silence_run += 1
        else:
            if self._silence_run >= max(1, _windows(o.pause_ms)):
                self._paused = True
            self._silence_run = 0
        if self._silence_run >= max(1, _windows(self.end_rule_ms)):
            trim = max(0, self._silence_run - _windows(o.post_roll_ms))
            return [self._finish(trim, "silence")]
        if len(self._audio) * WINDOW >= o.max_utterance_s * SAMPLE_RATE:
            return [self._finish(0, "max_length")]
        return []

    def flush(self) -> list[UtteranceEvent]:
        """End the current utterance now (the stream stopped)."""
        if not self._speaking:
            return []
        return [self._finish(max(0, self._silence_run - _windows(self.options.post_roll_ms)), "flush")]

    def _finish(self, trim_windows: int, reason: str) -> UtteranceEvent:
        audio = self._audio[: len(self._audio) - trim_windows] if trim_windows else self._audio
        speech_s, speech_end = self.speech_s, self.speech_end
        self._speaking = False
        self._audio = []
        self._silence_run = 0
        self._voiced = 0
        if speech_s * 1000.0 < self.options.min_speech_ms:
            return UtteranceEvent("discard", self.utterance, speech_s=speech_s, reason="too_short")
        return UtteranceEvent("end", self.utterance, np.concatenate(audio), speech_s, reason, speech_end)
