"""openai-whisper, the reference PyTorch implementation, behind speech/stt.py's `SpeechToText` interface.

`model` is a `.pt` path or a size name (registry `openai-whisper-<size>`, else whisper's own download).
It needs its 30 s window (its positional embedding is fixed), so its live decode is the ordinary one.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from speakdraw.speech.audio import SAMPLE_RATE
from speakdraw.speech.stt import (
    MAX_PROMPT_TOKENS,
    WINDOW_S,
    PriorityLock,
    STTUnavailable,
    TextSegment,
    Transcript,
    as_audio,
    pick_device,
)


class OpenAIWhisperSTT:
    name = "openai-whisper"

    def __init__(self, model: str = "tiny", device: str = "auto", language: str | None = None, beam_size: int = 5):
        import whisper

        self.device = pick_device(device)
        self.model_id = model
        self.beam_size = beam_size
        self.path = resolve_openai_whisper(model)
        if self.path is not None:
            self._model = whisper.load_model(str(self.path), device=self.device)
            heads = getattr(whisper, "_ALIGNMENT_HEADS", {}).get(model)
            if heads is not None:  # word timestamps need them; a path load does not set them
                self._model.set_alignment_heads(heads)
        else:
            from speakdraw import weights

            self._model = whisper.load_model(model, device=self.device, download_root=str(weights.home() / "whisper"))
        self.language = language or ("en" if not self._model.is_multilingual else None)
        self._lock = PriorityLock()

    @property
    def live_language(self) -> str:
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
        import torch

        audio = as_audio(audio)
        prompt = self._bounded_prompt(prompt)
        with self._lock.hold(background), torch.inference_mode():
            start = time.perf_counter()
            result = self._model.transcribe(
                audio,
                language=language or self.language,
                temperature=0.0 if fast else (0.0, 0.2, 0.4),
                beam_size=None if fast else self.beam_size,
                condition_on_previous_text=False,
                without_timestamps=True,
                fp16=self.device == "cuda",
                verbose=None,
                initial_prompt=prompt or None,
            )
            elapsed = time.perf_counter() - start
        segs = [
            TextSegment(s["text"], s["start"], s["end"], s["no_speech_prob"], s["avg_logprob"], s["compression_ratio"])
            for s in result.get("segments", [])
        ]
        transcript = Transcript.from_segments(segs, result.get("language") or "", len(audio) / SAMPLE_RATE, elapsed)
        if prompt and segs:
            transcript.prompt, transcript.prompted_no_speech_prob = prompt, transcript.no_speech_prob
            transcript.no_speech_prob = self._plain_no_speech(audio)
        return transcript

    def _plain_no_speech(self, audio: np.ndarray) -> float:
        """Whisper's no-speech probability for the first 30 s without any bias text (one decoder step).

        It costs one more encoder pass: openai-whisper is the reference engine, not the fast one.
        """
        import torch
        import whisper

        with self._lock.hold(), torch.inference_mode():
            mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), self._model.dims.n_mels).to(self.device)
            options = whisper.DecodingOptions(
                language=self.language, without_timestamps=True, sample_len=1, fp16=self.device == "cuda"
            )
            return float(whisper.decode(self._model, mel, options).no_speech_prob)

    def transcribe_window(
        self, audio: np.ndarray, *, beam_size: int = 1, prefix: str = "", window_s: float = WINDOW_S, prompt: str = ""
    ) -> Transcript:
        """openai-whisper needs its 30 s window (its positional embedding is fixed): the ordinary decode."""
        return self.transcribe(audio, fast=beam_size == 1, prompt=prompt)

    def _bounded_prompt(self, prompt: str) -> str:
        """The newest `MAX_PROMPT_TOKENS` tokens of the bias text (whisper itself allows up to 223)."""
        prompt = " ".join(prompt.split())
        if not prompt:
            return ""
        from whisper.tokenizer import get_tokenizer

        tokenizer = get_tokenizer(self._model.is_multilingual, num_languages=self._model.num_languages)
        return tokenizer.decode(tokenizer.encode(" " + prompt)[-MAX_PROMPT_TOKENS:]).strip()


def resolve_openai_whisper(model: str) -> Path | None:
    """A `.pt` checkpoint: the path given or registry `openai-whisper-<model>`; None = let whisper download it."""
    from speakdraw import weights

    path = Path(model).expanduser()
    if path.is_file():
        return path
    name = f"openai-whisper-{model}"
    if name in weights.REGISTRY:
        try:
            return weights.fetch(name)
        except weights.WeightsUnavailable as exc:
            raise STTUnavailable(str(exc)) from exc
    import whisper

    if model not in whisper.available_models():
        known = ", ".join(whisper.available_models())
        raise STTUnavailable(f"openai-whisper model {model!r} is neither a file nor one of {known}")
    return None
