"""Hallucination guard: Whisper invents text on silence and noise; refuse it.

Whisper was trained on subtitled video, so on non-speech it tends to emit the
captions that close videos ("Thank you.", "Thanks for watching!", "[Music]"). The
VAD keeps most non-speech away from it; this guard catches what gets through, using
Whisper's own confidence signals and the VAD's measure of how much speech there was:

- empty text, or only a non-speech tag ([Music], (applause), ♪) → refused
- NaN scores (a broken model) → refused
- no-speech probability high while the decoder is unsure → refused. Whisper's own
  rule is no_speech_prob > 0.6 and avg_logprob < -1 (faster-whisper already drops
  those segments); VAD-cut utterances are short, so this is tightened to > 0.4 and
  < -0.8. Measured with tiny.en: espeak-ng sentences and commands score at most
  0.43 / -0.55 together, time-reversed espeak speech (speech-like, no words, the
  classic trigger of "Thank you very much.") at least 0.45 / -0.85
- no_speech_prob > 0.9 alone → refused
- compression ratio > 2.4, or a loop (one word 4+ times in a row, or a 2-3 word
  phrase 3+ times) → refused
- more than 6 words per second of VAD-measured speech → refused (text from nowhere)
- only known video-closing captions ("thank you very much", "thanks for watching",
  "please subscribe"..., alone or chained) → refused unless the VAD heard over a
  second of speech and Whisper is sure it is speech (no_speech_prob < 0.2): a person
  may really say "thank you".
"""

from __future__ import annotations

import math
import re

from speakdraw.speech.stt import Transcript

KNOWN_HALLUCINATIONS = frozenset(
    {
        "thank you",
        "thank you very much",
        "thank you so much",
        "thanks",
        "thanks for watching",
        "thank you for watching",
        "thanks for watching and see you next time",
        "thank you for watching and see you next time",
        "please subscribe",
        "subscribe to my channel",
        "like and subscribe",
        "don't forget to like and subscribe",
        "see you next time",
        "see you in the next video",
        "bye",
        "bye bye",
        "goodbye",
        "you",
        "so",
        "oh",
        "uh",
        "um",
        "hmm",
        "okay",
        "i'm sorry",
        "the end",
        "subtitles by the amara org community",
        "transcribed by",
        "thank you very much for watching",
        "thank you so much for watching",
        "thanks so much for watching",
        "i'll see you next time",
        "i'll see you in the next video",
        "see you later",
    }
)
_CHAINED = re.compile(
    r"^(?:(?:" + "|".join(sorted(map(re.escape, KNOWN_HALLUCINATIONS), key=len, reverse=True)) + r")(?: and)? ?)+$"
)
_LOOP = re.compile(r"\b(\w+)(?: \1\b){3,}|\b(\w+(?: \w+){1,2})(?: \2\b){2,}")  # a word 4x, 2-3 words 3x
_TAG = re.compile(r"^\s*(\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[♪♫#\s.…-]+)+\s*$")
MAX_WORDS_PER_S = 6.0


def normalize(text: str) -> str:
    """Lowercase, punctuation dropped (apostrophes kept), spaces collapsed."""
    text = re.sub(r"[^\w\s']", " ", text.lower()).replace("_", " ")
    return " ".join(text.split())


def rejection(transcript: Transcript, speech_s: float | None = None) -> str | None:
    """Why this transcript should not be shown (None: keep it). `speech_s`: VAD speech time, if known."""
    text = transcript.text.strip()
    norm = normalize(text)
    if not norm:
        return "empty"
    if _TAG.match(text):
        return "non_speech_tag"
    if not all(math.isfinite(v) for v in (transcript.no_speech_prob, transcript.avg_logprob)):
        return "invalid_scores"
    if transcript.no_speech_prob > 0.9 or (transcript.no_speech_prob > 0.4 and transcript.avg_logprob < -0.8):
        return "no_speech"
    if transcript.compression_ratio > 2.4 or _LOOP.search(norm):
        return "repetitive"
    if speech_s is not None and len(norm.split()) > max(2.0, MAX_WORDS_PER_S * speech_s):
        return "too_many_words"
    if _CHAINED.match(norm):
        confident = speech_s is not None and speech_s >= 1.0 and transcript.no_speech_prob < 0.2
        if not confident:
            return "known_hallucination"
    return None
