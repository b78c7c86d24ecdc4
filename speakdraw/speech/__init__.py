"""Speech: call audio → 16 kHz mono → Silero VAD → utterances → Whisper → transcripts and commands.

No aiohttp/aiortc/av here; `server/call_speech.py` feeds `Transcriber` from the call's track.
"""

from speakdraw.speech.audio import SAMPLE_RATE, Resampler, resample
from speakdraw.speech.commands import Interpretation, interpret
from speakdraw.speech.guard import rejection
from speakdraw.speech.model_choice import load_stt
from speakdraw.speech.openai_stt import OpenAIWhisperSTT
from speakdraw.speech.segmenter import SegmenterOptions, UtteranceEvent, UtteranceSegmenter
from speakdraw.speech.stt import (
    FasterWhisperSTT,
    SpeechToText,
    STTUnavailable,
    TextSegment,
    Transcript,
)
from speakdraw.speech.transcriber import Transcriber, TranscriberOptions, TranscriptEvent
from speakdraw.speech.vad import SileroVAD
from speakdraw.speech.worker import SpeechWorker

__all__ = [
    "SAMPLE_RATE",
    "FasterWhisperSTT",
    "Interpretation",
    "OpenAIWhisperSTT",
    "Resampler",
    "STTUnavailable",
    "SegmenterOptions",
    "SileroVAD",
    "SpeechToText",
    "SpeechWorker",
    "Transcriber",
    "TranscriberOptions",
    "TextSegment",
    "Transcript",
    "TranscriptEvent",
    "UtteranceEvent",
    "UtteranceSegmenter",
    "interpret",
    "load_stt",
    "rejection",
    "resample",
]
