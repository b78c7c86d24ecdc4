"""What the live transcriber decides from two decodes: the words they agree on (local agreement), and
whether a fast final is doubtful enough to wait for the careful decode."""

from __future__ import annotations

import re

from speakdraw.speech.commands import match_command
from speakdraw.speech.guard import rejection
from speakdraw.speech.stt import Transcript


def norm_words(text: str) -> list[str]:
    """Lower-case words without punctuation: what two decodes are compared on."""
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def agreed_prefix(previous: str, current: str) -> str:
    """Local agreement: the words `current` shares with `previous` from the start, minus its newest word.

    The newest word may be cut mid-way by the end of the audio, so it is never committed.
    Returned in `current`'s spelling, trailing punctuation dropped (a forced "house." would end the text).
    """
    words = current.split()
    a, b = norm_words(previous), [(norm_words(w) or [""])[0] for w in words]
    n = 0
    while n < min(len(a), len(b), len(words) - 1) and a[n] == b[n] and b[n]:
        n += 1
    return " ".join(words[:n]).rstrip(".,!?;:")


def doubtful(transcript: Transcript, speech_s: float) -> str | None:
    """Why a fast (windowed) final should not be sent before the careful decode, or None."""
    reason = rejection(transcript, speech_s)
    if reason is not None:
        return reason
    # Windowed decodes score lower than 30 s ones on the same, correct text (espeak held-out
    # set: -0.25 to -0.9 for right sentences), so "unsure" starts below the guard's own line.
    if transcript.no_speech_prob > 0.5 or transcript.avg_logprob < -1.0:
        return "unsure"
    if transcript.looped:  # ran into the token limit: Whisper was repeating itself (speech-like noise does this)
        return "looped"
    # A command acts at once and cannot be corrected by a later prompt update, and short
    # phrases are where the windowed decode errs most (tiny.en: "stop listening" heard as
    # "start listening", which the 30 s decode gets right): commands wait for the careful decode.
    if match_command(transcript.text) is not None:
        return "command"
    return None
