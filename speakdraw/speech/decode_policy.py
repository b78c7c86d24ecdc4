"""What the live transcriber decides from its decodes: the words two partials agree on (local
agreement), whether a fast final is doubtful enough to wait for the careful decode, and whether
a final is a spoken command."""

from __future__ import annotations

import re

from speakdraw.speech.commands import CommandMatch, fuzzy_command
from speakdraw.speech.guard import collapse_repeats, rejection
from speakdraw.speech.stt import Transcript

# Biased decodes score far higher on right text than plain ones (tiny.en, tuning set: -0.67 at
# worst, median -0.16; reversed speech -0.68 to -1.41), so "unsure" starts higher for them.
BIASED_UNSURE_LOGPROB = -0.6
# A near-miss command phrase ("Next tile.") acts only when Whisper was this sure of what it heard.
FUZZY_MIN_LOGPROB = -0.6


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


def tidy(transcript: Transcript) -> Transcript:
    """A biased decode that says one phrase over and over ("Stronger. Stronger. Stronger.") keeps it once.

    That repetition is Whisper going on with the bias text's pattern of short sentences, so it
    also explains a decode that ran into its token limit (`looped`).
    """
    if transcript.prompt and transcript.text:
        text, repeats = collapse_repeats(transcript.text)
        if repeats > 1:
            transcript.text, transcript.repeats, transcript.looped = text, repeats, False
            for segment in transcript.segments[:1]:
                segment.text = text
            del transcript.segments[1:]
    return transcript


def doubtful(transcript: Transcript, speech_s: float) -> str | None:
    """Why a fast (windowed) final should not be sent before the careful decode, or None."""
    reason = rejection(transcript, speech_s)
    if reason is not None:
        return reason
    # Windowed decodes score lower than 30 s ones on the same, correct text (espeak held-out
    # set: -0.25 to -0.9 for right sentences), so "unsure" starts below the guard's own line.
    unsure = BIASED_UNSURE_LOGPROB if transcript.prompt else -1.0
    if transcript.no_speech_prob > 0.5 or transcript.avg_logprob < unsure:
        return "unsure"
    if transcript.looped:  # ran into the token limit: Whisper was repeating itself (speech-like noise does this)
        return "looped"
    return None


def command_of(transcript: Transcript) -> CommandMatch | None:
    """The spoken command in a final that passed the guard: an exact phrase, or a near one said with confidence."""
    match = fuzzy_command(transcript.text)
    if match is None or match.similarity >= 1.0:
        return match
    return match if transcript.avg_logprob >= FUZZY_MIN_LOGPROB else None
