"""Speech plumbing without Whisper: resampling, streaming VAD, segmentation, guard, commands, worker.

The STT used by the worker tests here is a test double that records calls and sleeps;
it stands in for Whisper only to exercise buffering and threading. Real-weights
transcription is in test_speech_whisper.py.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from speakdraw.settings import Settings
from speakdraw.speech.audio import Resampler, resample, to_float32, to_mono
from speakdraw.speech.commands import COMMANDS, interpret, match_command
from speakdraw.speech.guard import rejection
from speakdraw.speech.segmenter import SegmenterOptions, UtteranceSegmenter
from speakdraw.speech.stt import Transcript
from speakdraw.speech.transcriber import Transcriber, TranscriberOptions
from speakdraw.speech.vad import WINDOW, SileroVAD
from speakdraw.speech.worker import SpeechWorker
from tests.speechdata import espeak, have_espeak, noise, silence

needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")


def tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate).astype(np.float32)


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


# ---- audio ---------------------------------------------------------------------------


def test_resample_keeps_pitch_and_length():
    out = resample(tone(440, 1.0, 48000), 48000)
    assert abs(len(out) - 16000) <= 1
    assert abs(dominant_hz(out, 16000) - 440) < 2
    assert 0.6 < np.sqrt(np.mean(out[200:-200] ** 2)) / np.sqrt(0.5) < 1.05


def test_resample_filters_what_16k_cannot_hold():
    """A 10 kHz tone at 48 kHz would alias to 6 kHz without the low-pass."""
    out = resample(tone(10000, 1.0, 48000), 48000)
    assert np.sqrt(np.mean(out[200:-200] ** 2)) < 0.02


def test_streaming_resampler_matches_one_shot():
    x = (np.random.default_rng(0).standard_normal(48000 * 2) * 0.1).astype(np.float32)
    whole = Resampler(48000)(x)
    r = Resampler(48000)
    sizes = [960, 441, 1, 3000, 17]
    parts, i, k = [], 0, 0
    while i < len(x):
        parts.append(r(x[i : i + sizes[k % len(sizes)]]))
        i += sizes[k % len(sizes)]
        k += 1
    chunked = np.concatenate(parts)
    assert len(chunked) == len(whole)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)


def test_upsampling_and_formats():
    assert abs(len(resample(tone(300, 1.0, 8000), 8000)) - 16000) <= 1
    assert to_float32(np.array([-32768, 0, 16384], np.int16)).tolist() == [-1.0, 0.0, 0.5]
    stereo = np.array([1000, 3000, -1000, -3000], np.int16)
    assert to_mono(to_float32(stereo), channels=2).tolist() == pytest.approx([2000 / 32768, -2000 / 32768])
    with pytest.raises(TypeError):
        to_float32(np.array(["a"]))


# ---- VAD ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


@needs_espeak
def test_vad_streaming_matches_faster_whisper_offline(vad):
    from faster_whisper.vad import get_vad_model

    x = np.concatenate([silence(0.5), espeak("show me a castle on top of a hill"), silence(0.5)])
    x = x[: len(x) // WINDOW * WINDOW]
    reference = get_vad_model()(x.copy()).reshape(-1)
    stream = vad.stream()
    streamed = np.concatenate([stream.probs(x[i : i + 3 * WINDOW]) for i in range(0, len(x), 3 * WINDOW)])
    np.testing.assert_allclose(streamed, reference, atol=1e-5)
    assert streamed.max() > 0.9 and streamed[:10].max() < 0.5  # speech found, leading silence not


def test_vad_hears_no_speech_in_noise(vad):
    for kind in ("white", "pink", "brown", "hum"):
        x = noise(kind, 3.0, level=0.2)
        probs = vad.stream().probs(x[: len(x) // WINDOW * WINDOW])
        assert probs.max() < 0.5, kind


# ---- segmenter ----------------------------------------------------------------------


def run_segmenter(probs: list[float], options: SegmenterOptions | None = None):
    seg = UtteranceSegmenter(options)
    events = []
    for i, p in enumerate(probs):
        window = np.full(WINDOW, i, np.float32)  # each window tagged with its index
        events += seg.push(window, p)
    return seg, events


def test_segmenter_cuts_on_end_of_speech_silence():
    # 5 silent, 20 speech (with a 6-window pause shorter than the end rule), 30 silent windows of 32 ms
    probs = [0.0] * 5 + [0.9] * 8 + [0.1] * 6 + [0.9] * 6 + [0.0] * 30
    _, events = run_segmenter(probs, SegmenterOptions(end_silence_ms=500, pre_roll_ms=96, post_roll_ms=64))
    assert [e.kind for e in events] == ["start", "end"]
    audio = events[1].audio.reshape(-1, WINDOW)[:, 0]
    assert audio[0] == 2  # 3 windows of pre-roll kept
    assert audio[-1] == 5 + 20 + 2 - 1  # 2 windows of trailing silence kept
    assert events[1].speech_s == pytest.approx(14 * 0.032)


def test_segmenter_discards_clicks_and_splits_monologues():
    _, events = run_segmenter([0.0, 0.9, 0.9] + [0.0] * 30)  # 64 ms of "speech"
    assert [e.kind for e in events] == ["start", "discard"]
    _, events = run_segmenter([0.9] * 200, SegmenterOptions(max_utterance_s=2.0))
    ends = [e for e in events if e.kind == "end"]
    assert len(ends) == 3 and all(e.reason == "max_length" for e in ends)
    assert len({e.utterance for e in ends}) == 3


def test_segmenter_hysteresis_and_flush():
    # between neg_threshold and threshold counts as speech: no end
    seg, events = run_segmenter([0.9] * 10 + [0.4] * 40)
    assert [e.kind for e in events] == ["start"] and seg.speaking
    assert [e.kind for e in seg.flush()] == ["end"]
    assert seg.flush() == []


# ---- guard --------------------------------------------------------------------------


def t(text, no_speech=0.1, logprob=-0.3, ratio=1.2) -> Transcript:
    return Transcript(text, "en", 2.0, no_speech, logprob, ratio)


@pytest.mark.parametrize(
    "transcript, speech_s, reason",
    [
        (t(""), 1.0, "empty"),
        (t(" ... "), 1.0, "empty"),
        (t("[Music]"), 1.0, "non_speech_tag"),
        (t("words", no_speech=float("nan"), logprob=float("nan")), 1.0, "invalid_scores"),
        (t("(upbeat music) ♪"), 1.0, "non_speech_tag"),
        (t("a red house", no_speech=0.7, logprob=-1.2), 1.0, "no_speech"),
        (t("a red house", no_speech=0.95, logprob=-0.1), 1.0, "no_speech"),
        (t("the the the the house"), 2.0, "repetitive"),
        (t("Hey, I see you, see you, see you."), 2.0, "repetitive"),
        (t("a red house", ratio=2.8), 2.0, "repetitive"),
        (t("one two three four five six seven eight nine ten"), 0.5, "too_many_words"),
        (t("Thank you."), 0.4, "known_hallucination"),
        (t("Thanks for watching!", no_speech=0.3), 3.0, "known_hallucination"),  # long, but Whisper unsure
        (t("Thank you very much, and thank you very much.", no_speech=0.5), 2.0, "known_hallucination"),
        (t("Please subscribe. Bye.", no_speech=0.3), 2.0, "known_hallucination"),
    ],
)
def test_guard_refuses(transcript, speech_s, reason):
    assert rejection(transcript, speech_s) == reason


def test_guard_keeps_real_text():
    assert rejection(t("a watercolor painting of a lighthouse"), 2.0) is None
    assert rejection(t("Thank you for the painting."), 1.5) is None  # contains a caption, is not one
    assert rejection(t("Thank you.", no_speech=0.05), 1.2) is None  # clearly spoken thanks is kept


# ---- commands -----------------------------------------------------------------------


def test_every_documented_phrase_is_a_command():
    for name, (phrases, _) in COMMANDS.items():
        for phrase in phrases:
            assert match_command(phrase) == name
            assert match_command(f"Okay, {phrase.capitalize()}, please!") == name


def test_commands_change_settings_within_bounds():
    s = Settings(strength=0.5, mode="full", voice_prompt=True, seed=7)
    new_seed = interpret("New seed.", s)
    assert new_seed.kind == "command" and set(new_seed.changes) == {"seed"} and new_seed.changes["seed"] != 7
    assert interpret("Stronger.", s).changes == {"strength": 0.6}
    assert interpret("weaker", s).changes == {"strength": 0.4}
    top = interpret("Stronger!", Settings(strength=0.95))
    assert top.changes == {"strength": 1.0}
    assert interpret("stronger", Settings(strength=1.0)).changes == {}
    assert interpret("weaker", Settings(strength=0.0)).changes == {}
    assert interpret("Only me.", s).changes == {"mode": "human"}
    assert interpret("The whole picture.", Settings(mode="human")).changes == {"mode": "full"}
    assert interpret("Stop listening.", s).changes == {"voice_prompt": False}
    for phrase in ("new seed", "stronger", "weaker", "only me", "whole picture", "stop listening"):
        s.updated(interpret(phrase, s).changes)  # every change is valid Settings


def test_prompts_and_listening():
    on, off = Settings(voice_prompt=True), Settings(voice_prompt=False)
    prompt = interpret(" A stronger storm over the sea. ", on)
    assert prompt.kind == "prompt" and prompt.changes == {"prompt": "A stronger storm over the sea."}
    assert interpret("a castle on a hill", off).kind == "ignored"
    assert interpret("Start listening.", off).changes == {"voice_prompt": True}
    assert interpret("  ", on).kind == "ignored"
    assert len(interpret("word " * 400, on).changes["prompt"]) == 1000


# ---- the worker (test-double STT) ---------------------------------------------------


class SlowRecordingSTT:
    """Test double: records what it was asked, takes `cost_s`, answers a fixed sentence.

    `window_text` / `window_logprob`: what its windowed (fast) decode says, to drive the
    fast-final / careful-decode logic; the 30 s decode always says "a castle".
    """

    name, model_id, device = "double", "double", "cpu"

    def __init__(self, cost_s: float, window_text: str = "a castle", window_logprob: float = -0.2) -> None:
        self.cost_s = cost_s
        self.window_text, self.window_logprob = window_text, window_logprob
        self.calls: list[tuple[float, bool, str]] = []  # (audio s, fast, thread) of 30 s decodes
        self.window_calls: list[tuple[float, int, str]] = []  # (audio s, beam, prefix)

    def transcribe(self, audio, *, fast=False, background=False):
        self.calls.append((len(audio) / 16000, fast, threading.current_thread().name))
        time.sleep(self.cost_s)
        return Transcript("a castle", "en", len(audio) / 16000, 0.05, -0.2, 1.1, elapsed_s=self.cost_s)

    def transcribe_window(self, audio, *, beam_size=1, prefix="", window_s=10.0):
        self.window_calls.append((len(audio) / 16000, beam_size, prefix))
        time.sleep(self.cost_s)
        text = self.window_text
        return Transcript(text, "en", len(audio) / 16000, 0.05, self.window_logprob, 1.1, elapsed_s=self.cost_s)


@needs_espeak
def test_feed_never_blocks_and_old_audio_is_dropped_when_behind(vad):
    stt = SlowRecordingSTT(cost_s=1.0)
    worker = SpeechWorker("test-speech")
    events = []
    tr = Transcriber(stt, vad, events.append, worker=worker, options=TranscriberOptions(max_buffer_s=3.0))
    speech = np.concatenate([espeak("show me a castle on top of a hill"), silence(1.0)])
    try:
        start = time.perf_counter()
        for _ in range(4):  # 4 utterances fed at once, far faster than the STT can go
            for i in range(0, len(speech), 320):
                tr.feed((speech[i : i + 320] * 32767).astype(np.int16))
        assert time.perf_counter() - start < 0.5  # feeding ~15 s of audio did not wait on the model
        assert tr.backlog_s <= 3.0 + 0.1
        assert tr.wait_idle(30)
        assert tr.stats["dropped_s"] > 0
        assert all(name == "test-speech" for _, _, name in stt.calls)
        assert stt.window_calls and not stt.calls  # every decode was a windowed one: fast finals, no careful
        assert tr.stats["finals"] >= 1 and len([e for e in events if e.final]) == tr.stats["finals"]
    finally:
        worker.stop()


@needs_espeak
def test_partials_then_one_final_per_utterance(vad):
    stt = SlowRecordingSTT(cost_s=0.01)
    worker = SpeechWorker("test-speech")
    events = []
    tr = Transcriber(stt, vad, events.append, worker=worker, options=TranscriberOptions(partial_interval_s=0.5))
    audio = np.concatenate([silence(0.5), espeak("this is a test of the speech recognition system"), silence(1.0)])
    audio = np.concatenate([audio, audio])
    try:
        for i in range(0, len(audio), 320):  # 20 ms chunks at 10x real time
            tr.feed(audio[i : i + 320])
            time.sleep(0.002)
        assert tr.wait_idle(30)
    finally:
        worker.stop()
    finals = [e for e in events if e.final]
    assert [e.utterance for e in finals] == [0, 1]
    for u in (0, 1):
        partials = [e for e in events if e.utterance == u and not e.final]
        assert len(partials) >= 2  # ~2.5 s of speech, one partial per 0.5 s of audio
        assert events.index(partials[-1]) < events.index(finals[u])
    # finals: one beam-5 windowed decode each (the fast final); partials greedy; no 30 s decode needed
    assert sum(1 for _, beam, _ in stt.window_calls if beam > 1) == 2
    assert not stt.calls
    for u in (0, 1):
        final = finals[u]
        assert set(final.stages) == {"eos", "wait", "decode"} and all(v >= 0 for v in final.stages.values())


def speak_into(tr: Transcriber, seconds_silence: float = 1.0) -> None:
    audio = np.concatenate([silence(0.3), espeak("show me a castle on top of a hill"), silence(seconds_silence)])
    for i in range(0, len(audio), 320):
        tr.feed(audio[i : i + 320])
        deadline = time.monotonic() + 5
        while tr.backlog_s > 0 and time.monotonic() < deadline:  # the thread sees the audio as it comes
            time.sleep(0.001)


@needs_espeak
@pytest.mark.parametrize(
    "careful, window_text, logprob, expect",
    [
        ("doubtful", "a castle", -0.2, ["a castle"]),  # sure fast final: sent, no 30 s decode
        ("doubtful", "a castle", -1.5, ["a castle"]),  # unsure: held back, the careful decode is the final
        ("always", "a cattle", -0.2, ["a cattle", "a castle"]),  # differs: one correction, marked revised
        ("always", "A castle!", -0.2, ["A castle!"]),  # same words: no correction
        ("doubtful", "the the the the castle", -0.2, ["a castle"]),  # the guard refuses the fast one: careful decides
    ],
)
def test_fast_final_and_careful_correction(vad, careful, window_text, logprob, expect):
    stt = SlowRecordingSTT(0.0, window_text=window_text, window_logprob=logprob)
    worker = SpeechWorker("test-speech")
    events: list = []
    options = TranscriberOptions(partials=False, careful=careful)
    tr = Transcriber(stt, vad, events.append, worker=worker, options=options)
    try:
        speak_into(tr)
        assert tr.wait_idle(30)
    finally:
        worker.close()
    finals = [e for e in events if e.final]
    assert [e.text for e in finals] == expect
    assert [e.revision for e in finals] == [0] + [1] * (len(expect) - 1)
    assert [e.message().get("revised", False) for e in finals] == [False] + [True] * (len(expect) - 1)
    assert tr.stats["speculative_used"] == 1  # decoded during the silence rule, reused as the fast final
    careful_runs = len(stt.calls)
    assert careful_runs == (0 if (careful, logprob, window_text) == ("doubtful", -0.2, "a castle") else 1)


def test_local_agreement_commits_what_two_hypotheses_share():
    from speakdraw.speech.decode_policy import agreed_prefix

    assert agreed_prefix("", "paint my room") == ""
    assert agreed_prefix("Paint my room,", "paint my room like") == "paint my room"  # case/punctuation-blind
    assert agreed_prefix("paint my ro", "paint my room like") == "paint my"  # a word cut by the audio's end
    assert agreed_prefix("paint my room", "paint my room") == "paint my"  # the newest word is never committed
    assert agreed_prefix("paint a room.", "paint a room. Like") == "paint a room"  # no forced full stop
    assert agreed_prefix("a red house", "the red house") == ""


def test_end_of_speech_rule_is_short_then_longer_after_a_pause():
    o = SegmenterOptions(end_silence_ms=300, end_silence_after_pause_ms=500, pause_ms=160, pre_roll_ms=0)
    # no pause: the utterance ends after ~300 ms (9 windows of 32 ms) of silence, not before
    _, events = run_segmenter([0.0] * 3 + [0.9] * 20 + [0.0] * 8, o)
    assert [e.kind for e in events] == ["start"]
    _, events = run_segmenter([0.0] * 3 + [0.9] * 20 + [0.0] * 9, o)
    assert [e.kind for e in events] == ["start", "end"]
    assert events[1].audio.reshape(-1, WINDOW)[-1, 0] == 22 + 6  # last speech window + 200 ms post-roll
    # a 224 ms pause inside the sentence (7 windows, ≥ pause_ms): then 300 ms is not enough
    seg, events = run_segmenter([0.0] * 3 + [0.9] * 10 + [0.0] * 7 + [0.9] * 10 + [0.0] * 12, o)
    assert [e.kind for e in events] == ["start"] and seg.end_rule_ms == 500
    seg, events = run_segmenter([0.0] * 3 + [0.9] * 10 + [0.0] * 7 + [0.9] * 10 + [0.0] * 20, o)
    assert [e.kind for e in events] == ["start", "end"]


def test_live_speech_goes_before_background_work():
    from speakdraw.speech.stt import PriorityLock

    lock, order = PriorityLock(), []
    holding = threading.Event()

    def first():
        with lock.hold(background=True):
            holding.set()
            time.sleep(0.2)
            order.append("upload-1")

    def take(name, background):
        with lock.hold(background):
            order.append(name)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    holding.wait(5)
    threads.append(threading.Thread(target=take, args=("upload-2", True)))
    threads[-1].start()
    time.sleep(0.05)  # upload-2 queued first ...
    threads.append(threading.Thread(target=take, args=("live", False)))
    threads[-1].start()  # ... live work still goes before it
    for t in threads:
        t.join(5)
    assert order == ["upload-1", "live", "upload-2"]


def test_the_caller_owns_the_speech_thread():
    import speakdraw.speech as speech

    assert not hasattr(speech, "default_worker")  # no process-wide singleton any more
    worker = SpeechWorker("test-owned-speech")
    stt = SlowRecordingSTT(0.0)
    tr = Transcriber(stt, SileroVAD(), lambda e: None, worker=worker)
    tr.feed(np.zeros(1600, np.float32))
    assert tr.wait_idle(10) and worker.alive
    worker.close()
    assert not worker.alive
    assert not [t for t in threading.enumerate() if t.name == "test-owned-speech"]


def test_speech_threads_run_ahead_of_video_where_the_os_allows():
    """The speech worker sets its own nice to SPEECH_NICE; without CAP_SYS_NICE it stays unchanged."""
    import os

    from speakdraw.speech.priority import SPEECH_NICE, set_thread_nice, thread_nice

    seen: dict = {}

    def probe():
        seen["allowed"] = set_thread_nice(SPEECH_NICE)
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    assert seen["nice"] == (SPEECH_NICE if seen["allowed"] else 0)
    here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with thread_nice(SPEECH_NICE):
        pass
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == here  # restored
