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

Biased decodes (a bias text was given, `Transcript.prompt`; speech/vocabulary.py) hallucinate
differently: the bias text makes Whisper sure of itself, so its no-speech probability is taken
without the text (stt.py), and on non-speech it tends to say the bias words back. Measured with
tiny.en on the tuning set (espeak prompts and commands in 4 voices vs time-reversed espeak speech
and generated noise): right decodes average -0.67 to -0.05 log-probability per token, reversed
speech -0.68 to -1.41, noise -1.09 to -1.60. So, for biased decodes only:

- avg_logprob < -1.0 → refused (`unsure`);
- a recital of the bias text's lists: 4+ of their words in order ("pencil sketch ink drawing"),
  or 3+ of their terms making up most of the words (base, on reversed speech: "Simulet, sepia,
  surreal, cartoon.", -0.82) → refused unless avg_logprob ≥ -0.5 (`bias_echo`);
- only bias words (stop words aside), unless Whisper is sure: no_speech_prob ≤ 0.4 and
  avg_logprob ≥ -0.75 (`bias_only`). Spoken commands are only bias words; they score
  -0.67 at worst;
- a phrase said over and over ("Stronger. Stronger. Stronger.") is Whisper continuing the
  bias text's pattern: `collapse_repeats` keeps one, and the guard lets that through only when
  sure (avg_logprob ≥ -0.6), else `repetitive`.
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
BIASED_MIN_LOGPROB = -1.0
BIAS_ONLY_MIN_LOGPROB = -0.75
BIAS_ONLY_MAX_NO_SPEECH = 0.4
REPEAT_MIN_LOGPROB = -0.6
ECHO_WORDS = 4
ECHO_TERMS = 3
ECHO_MIN_LOGPROB = -0.5  # a recital this sure is someone naming media ("watercolor and ink, anime style")
# Words that say nothing about what was heard: a final of these and bias words is a bias echo.
STOP_WORDS = frozenset(
    "a an the of in on at to and or with like me my it is it's its this that make look please okay ok".split()
)


def normalize(text: str) -> str:
    """Lowercase, punctuation dropped (apostrophes kept), spaces collapsed."""
    text = re.sub(r"[^\w\s']", " ", text.lower()).replace("_", " ")
    return " ".join(text.split())


def collapse_repeats(text: str) -> tuple[str, int]:
    """A phrase said k ≥ 2 times in a row and nothing else → (the phrase once, k); else (text, 1).

    A trailing, cut-off repeat counts ("a red house, a red house, a red" → "a red house").
    """
    tokens = text.split()
    words = [normalize(t) for t in tokens]
    n = len(words)
    for period in range(1, n // 2 + 1):
        if all(words[i] == words[i % period] for i in range(n)):
            phrase = " ".join(tokens[:period]).rstrip(",;:-")
            return (phrase if phrase[-1:] in ".!?" else phrase + "."), -(-n // period)
    return text, 1


def _content_words(norm: str) -> list[str]:
    return [w for w in norm.split() if w not in STOP_WORDS]


def _list_terms(prompt: str) -> list[str]:
    """The bias text's list items: its comma-separated terms and its short (command) sentences."""
    sentences = re.split(r"(?<=[.!?])\s+", prompt)
    items = [t for s in sentences if "," in s for t in s.split(",")]
    items += [s for s in sentences if "," not in s and len(s.split()) <= 3]
    return [n for n in (normalize(t) for t in items) if n]


def bias_echo(norm: str, prompt: str) -> bool:
    """`norm` recites the bias text's lists: `ECHO_WORDS`+ of their words in order ("pencil sketch ink
    drawing"), or `ECHO_TERMS`+ of their terms making up most of what was said ("sepia, surreal, cartoon")."""
    terms = _list_terms(prompt)
    source = " ".join(terms).split()
    words = norm.split()
    runs = {tuple(source[i : i + ECHO_WORDS]) for i in range(len(source) - ECHO_WORDS + 1)}
    if any(tuple(words[i : i + ECHO_WORDS]) in runs for i in range(len(words) - ECHO_WORDS + 1)):
        return True
    padded = f" {norm} "
    hits = [t for t in set(terms) if f" {t} " in padded]
    covered = sum(len(t.split()) for t in hits)
    return len(hits) >= ECHO_TERMS and covered >= 0.6 * max(1, len(_content_words(norm)))


def bias_only(norm: str, prompt: str) -> bool:
    """Every content word of `norm` is in the bias text (and there is at least one)."""
    words = _content_words(norm)
    vocabulary = set(normalize(prompt).split())
    return bool(words) and all(w in vocabulary for w in words)


def _biased(transcript: Transcript, norm: str) -> str | None:
    if transcript.avg_logprob < BIASED_MIN_LOGPROB:
        return "unsure"
    if transcript.repeats > 1 and transcript.avg_logprob < REPEAT_MIN_LOGPROB:
        return "repetitive"
    if transcript.avg_logprob < ECHO_MIN_LOGPROB and bias_echo(norm, transcript.prompt):
        return "bias_echo"
    sure = transcript.no_speech_prob <= BIAS_ONLY_MAX_NO_SPEECH and transcript.avg_logprob >= BIAS_ONLY_MIN_LOGPROB
    if not sure and bias_only(norm, transcript.prompt):
        return "bias_only"
    return None


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
    if transcript.prompt:
        reason = _biased(transcript, norm)
        if reason is not None:
            return reason
    if speech_s is not None and len(norm.split()) > max(2.0, MAX_WORDS_PER_S * speech_s):
        return "too_many_words"
    if _CHAINED.match(norm):
        confident = speech_s is not None and speech_s >= 1.0 and transcript.no_speech_prob < 0.2
        if not confident:
            return "known_hallucination"
    return None
