"""Vocabulary biasing with real weights (faster-whisper tiny.en int8, espeak-ng speech): the words a
painter uses come back right, commands are heard on the fast decode, and silence, noise and
speech-like non-speech still give no final, nor bias words said back.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from speakdraw.speech import SileroVAD, SpeechWorker, Transcriber, TranscriberOptions
from speakdraw.speech.commands import fuzzy_command
from speakdraw.speech.guard import bias_only, normalize
from speakdraw.speech.vocabulary import Vocabulary
from tests.speechdata import COMMAND_PHRASES, add_noise, espeak, have_espeak, noise, silence, speech_track, to_int16

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")

BIAS = Vocabulary().prompt()


@pytest.fixture(scope="module")
def vad():
    return SileroVAD()


def stream(stt, vad, audio, bias=BIAS, **options):
    """Feed `audio` (16 kHz) like a call, keeping the speech thread no more than 0.2 s behind."""
    events = []
    worker = SpeechWorker("test-speech")
    opts = TranscriberOptions(**{"max_buffer_s": 600.0, **options})
    tr = Transcriber(stt, vad, events.append, worker=worker, options=opts, bias=(lambda: bias) if bias else None)
    pcm = to_int16(audio)
    try:
        for i in range(0, len(pcm), 320):
            tr.feed(pcm[i : i + 320])
            while tr.backlog_s > 0.2:
                time.sleep(0.005)
        tr.flush()
        assert tr.wait_idle(300)
    finally:
        worker.close()
    return events, tr


def test_the_readme_example_is_heard_with_the_bias_text(stt):
    """Issue 22: tiny.en heard "at Walker color painting of a dragon" without the bias text."""
    audio = np.concatenate([silence(0.3), espeak("a watercolor painting of a dragon", "en-us"), silence(0.2)])
    plain = stt.transcribe_window(audio, beam_size=5)
    biased = stt.transcribe_window(audio, beam_size=5, prompt=BIAS)
    print(f"plain: {plain.text!r}, biased: {biased.text!r}")
    assert normalize(biased.text) == "a watercolor painting of a dragon"
    assert biased.prompt and biased.prompted_no_speech_prob is not None
    # the guard gets the no-speech probability Whisper gives without the bias text
    assert biased.no_speech_prob == pytest.approx(plain.no_speech_prob, abs=0.02)
    careful = stt.transcribe(audio, prompt=BIAS)
    assert normalize(careful.text) == "a watercolor painting of a dragon"


@pytest.mark.parametrize("voice", ["en-us", "en-gb-x-rp"])
def test_commands_are_heard_on_the_fast_decode(stt, vad, voice):
    audio, _ = speech_track([(p, voice) for p in COMMAND_PHRASES], gap_s=1.2)
    events, tr = stream(stt, vad, audio, partials=False)
    firsts = {}
    for e in events:
        if e.final and e.text:
            firsts.setdefault(e.utterance, e)
    heard = [firsts[u].command for u in sorted(firsts)]
    expected = [fuzzy_command(p).command for p in COMMAND_PHRASES]
    print(voice, [(firsts[u].text, firsts[u].command) for u in sorted(firsts)], tr.stats)
    right = sum(h == x for h, x in zip(heard, expected, strict=False))
    assert len(heard) == len(expected) and right >= len(expected) - 1, heard
    # at most one was only right after the careful decode looked again
    assert tr.stats["command_corrections"] <= 1


def test_silence_and_noise_give_no_final_with_the_bias_text(stt, vad):
    reference = espeak("a sentence of ordinary loudness")
    parts = [silence(2.0)]
    for i, kind in enumerate(("white", "pink", "brown", "hum")):
        for level in (0.02, 0.3):
            parts += [noise(kind, 2.5, level=level, seed=i), silence(0.5)]
    parts += [add_noise(silence(5.0), 10.0, speech=reference, seed=7), silence(0.5)]
    events, tr = stream(stt, vad, np.concatenate(parts))
    assert [e.text for e in events] == []
    assert tr.stats["finals"] == 0


def test_speech_like_non_speech_does_not_say_the_bias_words_back(stt, vad):
    """Time-reversed speech passes the VAD; with a bias text tiny.en said "Weaker. Weaker. Weaker." to it."""
    said = ["a cat wearing a space helmet", "a bowl of fruit on a wooden table", "stronger", "new seed", "next style"]
    parts = [silence(0.5)]
    for voice in ("en-us", "en+f3", "en-gb-x-rp"):
        for text in said:
            parts += [espeak(text, voice)[::-1].copy(), silence(1.2)]
    events, tr = stream(stt, vad, np.concatenate(parts))
    finals = [e for e in events if e.final and e.text]
    print("reversed speech finals:", [(e.text, e.command) for e in finals], tr.stats)
    assert tr.stats["utterances"] >= 10  # the VAD let them through to Whisper
    assert [e.text for e in finals if e.command] == []  # no command from noise
    assert [e.text for e in finals if bias_only(normalize(e.text), BIAS)] == []


def test_openai_whisper_takes_the_bias_text_as_its_initial_prompt(tmp_path):
    """The reference engine's plumbing, on a tiny random-weight model (its real weights are not reachable here)."""
    import dataclasses

    import torch
    from whisper.model import ModelDimensions, Whisper

    from speakdraw.speech import load_stt

    torch.manual_seed(0)
    dims = ModelDimensions(80, 1500, 64, 2, 1, 51864, 448, 64, 2, 1)
    model = Whisper(dims)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02)
    checkpoint = tmp_path / "tiny-random.pt"
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": model.state_dict()}, checkpoint)
    stt = load_stt("openai-whisper", str(checkpoint), "cpu")
    audio = np.concatenate([silence(0.3), espeak("a watercolor painting of a dragon"), silence(0.3)])
    seen = {}
    original = stt._model.transcribe

    def spy(audio, **kwargs):
        seen.update(kwargs)
        return original(audio, **kwargs)

    stt._model.transcribe = spy
    result = stt.transcribe(audio, prompt="watercolor " * 400)  # far too long: bounded to the newest tokens
    assert seen["initial_prompt"].split() and len(seen["initial_prompt"].split()) <= 150
    if result.segments:  # random weights may say nothing; when they say something, the scores are sorted out
        assert result.prompt == seen["initial_prompt"]
        assert 0.0 <= result.no_speech_prob <= 1.0 and result.prompted_no_speech_prob is not None
    plain = stt.transcribe(audio)
    assert seen["initial_prompt"] is None and plain.prompt == ""
