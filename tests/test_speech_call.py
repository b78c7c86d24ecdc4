"""End to end: espeak-ng speech as the call's microphone, through a real WebRTC connection
(aiortc client, Opus), into `speakdraw serve --stt faster-whisper` (tiny.en): transcript
finals come back on the data channel, a spoken command changes its setting, and the
active prompt becomes the last final.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.rtc_client import RtcClient
from tests.speechdata import SENTENCES, PcmAudioTrack, have_espeak, speech_track, wer

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")]


async def test_spoken_sentences_become_transcripts_commands_and_the_prompt(start_server):
    server = start_server(stt="faster-whisper")
    sentences = [(SENTENCES[0], "en-us"), (SENTENCES[3], "en-gb-x-rp"), ("stronger", "en-us"), (SENTENCES[2], "en+f3")]
    audio, _ = speech_track(sentences, gap_s=1.2, rate=48000)
    mic = PcmAudioTrack(audio)
    client = RtcClient(server.base, audio=mic, settings={"strength": 0.5, "voice_prompt": True})
    try:
        await client.connect()
        finals: list[dict] = []
        deadline = time.monotonic() + len(audio) / 48000 + 20
        while len(finals) < len(sentences) and time.monotonic() < deadline:
            message = await client.expect("transcript", timeout=max(0.1, deadline - time.monotonic()))
            if message["final"]:
                finals.append(message)
        texts = [m["text"] for m in finals]
        assert len(finals) == len(sentences), texts
        assert len({m["utterance"] for m in finals}) == len(finals)
        partials = [m for m in client.all_messages if m.get("type") == "transcript" and not m["final"]]
        assert partials, "no partial transcripts while speaking"

        prompts = [s for s, _ in sentences if s != "stronger"]
        prompt_finals = [t for t, (s, _) in zip(texts, sentences, strict=True) if s != "stronger"]
        error = wer(prompts, prompt_finals)
        print(f"call WER {error:.3f}: {texts}")
        assert error <= 0.20

        commands = [m for m in client.all_messages if m.get("type") == "command"]
        assert [c["command"] for c in commands] == ["stronger"]
        await asyncio.sleep(0.5)
        current = (await client.request({"type": "settings", "settings": {}}, "settings"))["settings"]
        assert current["strength"] == pytest.approx(0.6)
        assert current["prompt"] == texts[-1].strip()  # the active prompt is the last final
    finally:
        await client.close()


async def test_a_long_upload_while_the_call_speaks_does_not_stop_its_finals(start_server, tmp_path):
    """Issue 14 row 7, through the real server: POST /api/transcribe of 4 min of speech during a call.

    Before, the upload held the model for its whole length and the call's utterances behind it
    were delayed past the 10 s backlog and dropped without notice.
    """
    import aiohttp

    from tests.speechdata import encode, write_wav

    server = start_server(stt="faster-whisper")
    upload_audio, _ = speech_track([(SENTENCES[i % len(SENTENCES)], "en-us") for i in range(48)], gap_s=2.5)
    assert len(upload_audio) / 16000 >= 240
    wav = encode(write_wav(tmp_path / "long.wav", upload_audio), tmp_path / "long.ogg").read_bytes()
    sentences = [(SENTENCES[0], "en-us"), (SENTENCES[2], "en+f3"), (SENTENCES[5], "en-gb-x-rp")]
    audio, _ = speech_track(sentences, gap_s=1.2, lead_s=1.5, rate=48000)
    client = RtcClient(server.base, audio=PcmAudioTrack(audio))
    try:
        await client.connect()
        async with aiohttp.ClientSession() as http:
            upload = asyncio.ensure_future(http.post(server.base + "/api/transcribe", data=wav))
            await asyncio.sleep(0.5)
            finals: list[dict] = []
            upload_running_at_finals: list[bool] = []
            deadline = time.monotonic() + len(audio) / 48000 + 15
            while len({m["utterance"] for m in finals}) < len(sentences) and time.monotonic() < deadline:
                message = await client.expect("transcript", timeout=max(0.1, deadline - time.monotonic()))
                if message["final"] and message["text"]:
                    finals.append(message)
                    upload_running_at_finals.append(not upload.done())
            resp = await asyncio.wait_for(upload, 300)
            body = await resp.json()
        assert resp.status == 200 and len(body["text"].split()) > 250, body
        assert len({m["utterance"] for m in finals}) == len(sentences), [m["text"] for m in finals]
        errors = [m for m in client.all_messages if m.get("type") == "error"]
        assert not [m for m in errors if m.get("code") == "speech_dropped"]
        print("upload still running at each final:", upload_running_at_finals)
        assert any(upload_running_at_finals)  # the finals did not wait for the upload
    finally:
        await client.close()
