"""Issue 14, row 5: a call that joins while speech is still loading is transcribed once it is ready.

The call connects as soon as the listeners answer, before `/healthz` says the models are ready
(the first `status` it gets says `ready: false`); espeak-ng speech then plays as its microphone
through a real WebRTC connection, and finals must come back on the data channel.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.rtc_client import RtcClient
from tests.serverproc import ServerProcess
from tests.speechdata import SENTENCES, PcmAudioTrack, have_espeak, speech_track, to_int16, wer

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")]


async def test_a_call_that_joins_while_speech_loads_gets_finals(tmp_path):
    # rvm matting and the tiny diffusion engine load before speech: seconds in which a call can join
    server = ServerProcess(engine="tiny", stt="faster-whisper", matting="rvm", log_path=tmp_path / "server.log")
    sentences = [(SENTENCES[0], "en-us"), (SENTENCES[2], "en-us"), (SENTENCES[3], "en-us")]
    audio, _ = speech_track(sentences, gap_s=1.5, lead_s=0.5, rate=48000)
    mic = PcmAudioTrack(np.zeros(4800, np.float32))  # silence until speech is ready
    client = RtcClient(server.base, audio=mic, settings={"width": 256, "height": 256})
    try:
        deadline = time.monotonic() + 60
        while True:  # the listeners are up (the models are not)
            assert server.proc.poll() is None, server.log_text()
            try:
                with urllib.request.urlopen(server.base + "/healthz", timeout=2) as resp:
                    resp.read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        await client.connect()
        first = await client.expect("status")
        assert first["ready"] is False, f"joined too late to test this: {first}"
        await client.expect("status", timeout=90, where=lambda m: m["ready"])
        assert server.health()["engine_ready"]
        # now speak: the sentences start where the mic is (the track keeps its timeline)
        mic.pcm = np.concatenate([np.zeros(mic.sent + 4800, np.int16), to_int16(audio)])

        finals: list[str] = []
        deadline = time.monotonic() + len(audio) / 48000 + 30
        while time.monotonic() < deadline and len(finals) < len(sentences):
            message = await client.expect("transcript", timeout=max(0.1, deadline - time.monotonic()))
            if message["final"]:
                finals.append(message["text"])
        print("finals after a late join:", finals)
        assert finals, "a call that joined while speech loaded got no transcript"
        # what was said while speech was still loading is lost; what came after is transcribed
        best = min(wer([s], [finals[-1]]) for s, _ in sentences)
        assert best <= 0.34, finals
    finally:
        await client.close()
        server.stop()
