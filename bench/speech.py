"""Speech: end-of-speech → final transcript latency, real-time factor, and what speech costs video.

Prints a table and writes bench/results/speech.json.

1. Transcriber alone (faster-whisper tiny.en int8, this CPU): espeak-ng sentences in
   three voices fed in 20 ms chunks at real-time pace, partials on, as in a call.
   Latency = last voiced chunk fed → final event (includes the 500 ms end-of-speech
   silence rule, which is also reported alone). RTF = Whisper time / audio time
   (finals; and all Whisper calls, partials included, per second of speech).
2. A real call (`speakdraw serve --engine passthrough --stt faster-whisper`, aiortc
   client sending 512×512 video at 30 fps plus a mic track): video frames/s received
   while the mic sends silence (baseline, same server, interleaved rounds) vs while it
   sends speech that is being transcribed; and end-of-speech → final as the client
   sees it (Opus + WebRTC + data channel included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from speakdraw.speech import SileroVAD, SpeechWorker, Transcriber, TranscriberOptions, load_stt  # noqa: E402
from tests.speechdata import SENTENCES, VOICES, PcmAudioTrack, speech_track, to_int16  # noqa: E402


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def transcriber_latency(utterances: int) -> dict:
    stt = load_stt("faster-whisper", "tiny.en", "cpu")
    vad = SileroVAD()
    items = [(SENTENCES[i % len(SENTENCES)], VOICES[i % len(VOICES)]) for i in range(utterances)]
    audio, spans = speech_track(items, gap_s=1.5, rate=16000)
    events = []
    worker = SpeechWorker("bench-speech")
    tr = Transcriber(stt, vad, events.append, worker=worker, options=TranscriberOptions())
    pcm = to_int16(audio)
    step = 320
    start = time.monotonic()
    for i in range(0, len(pcm), step):  # real-time pace, like a microphone
        delay = start + i / 16000 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        tr.feed(pcm[i : i + step])
    tr.flush()
    tr.wait_idle(120)
    worker.stop()
    finals = [e for e in events if e.final and e.text]
    latency = [e.latency_s for e in finals]
    final_rtf = [e.stt_s / e.audio_s for e in finals]
    speech_s = sum(end - begin for _, begin, end in spans)
    return {
        "utterances": len(items),
        "finals": len(finals),
        "partials": sum(1 for e in events if not e.final),
        "latency_p50_s": pct(latency, 50),
        "latency_p95_s": pct(latency, 95),
        "end_silence_rule_s": tr.options.segmenter.end_silence_ms / 1000,
        "final_stt_p50_s": pct([e.stt_s for e in finals], 50),
        "final_rtf_p50": pct(final_rtf, 50),
        "all_stt_s_per_speech_s": tr.stats["stt_s"] / speech_s,
        "dropped_s": tr.stats["dropped_s"],
        "texts": [e.text for e in finals],
    }


async def call_round(base: str, audio: np.ndarray, spans, seconds: float, warmup: float) -> dict:
    from tests.rtc_client import RtcClient

    mic = PcmAudioTrack(audio)
    client = RtcClient(base, audio=mic, fps=30.0)
    await client.connect()
    try:
        await asyncio.sleep(warmup)
        n0, t0 = client.frames_received, time.monotonic()
        await asyncio.sleep(seconds)
        n1, t1 = client.frames_received, time.monotonic()
        finals = [
            (m["_at"], m["text"]) for m in client.all_messages if m.get("type") == "transcript" and m.get("final")
        ]
        server_fps = [m["fps_out"] for m in client.all_messages if m.get("type") == "stats"][-int(seconds) :]
    finally:
        await client.close()
    latency = []
    if mic._start is not None:
        for at, _ in finals:  # match each final to the sentence that ended just before it
            ended = [mic._start + end for _, _, end in spans if mic._start + end <= at]
            if ended:
                latency.append(at - max(ended))
    return {
        "fps": (n1 - n0) / (t1 - t0),
        "server_fps_out_mean": float(np.mean(server_fps)) if server_fps else float("nan"),
        "finals": len(finals),
        "latency": latency,
    }


async def call_fps(rounds: int, seconds: float) -> dict:
    from tests import rtc_client
    from tests.serverproc import ServerProcess

    original = rtc_client.RtcClient._on_message

    def stamped(self, raw):  # arrival time of every message
        original(self, raw)
        self.all_messages[-1]["_at"] = time.monotonic()

    rtc_client.RtcClient._on_message = stamped
    items = [(SENTENCES[i % len(SENTENCES)], VOICES[i % len(VOICES)]) for i in range(12)]
    speech, spans = speech_track(items, gap_s=1.2, rate=48000)
    quiet = np.zeros_like(speech)
    server = ServerProcess(engine="passthrough", stt="faster-whisper")
    results: dict[str, list] = {"silence": [], "speech": []}
    try:
        server.wait_ready()
        for _ in range(rounds):
            for name, audio in (("silence", quiet), ("speech", speech)):
                results[name].append(await call_round(server.base, audio, spans, seconds, warmup=3.0))
    finally:
        server.stop()
        rtc_client.RtcClient._on_message = original
    base_fps = float(np.mean([r["fps"] for r in results["silence"]]))
    speech_fps = float(np.mean([r["fps"] for r in results["speech"]]))
    latency = [x for r in results["speech"] for x in r["latency"]]
    return {
        "rounds": rounds,
        "seconds_per_round": seconds,
        "fps_silence": base_fps,
        "fps_speech": speech_fps,
        "fps_ratio": speech_fps / base_fps,
        "server_fps_out_silence": float(np.mean([r["server_fps_out_mean"] for r in results["silence"]])),
        "server_fps_out_speech": float(np.mean([r["server_fps_out_mean"] for r in results["speech"]])),
        "finals_in_speech_rounds": sum(r["finals"] for r in results["speech"]),
        "finals_in_silence_rounds": sum(r["finals"] for r in results["silence"]),
        "call_latency_p50_s": pct(latency, 50),
        "call_latency_p95_s": pct(latency, 95),
        "rounds_detail": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per call round")
    parser.add_argument("--skip-call", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "speech.json")
    args = parser.parse_args()

    result: dict = {"cpu": cpu_name(), "cores": os.cpu_count(), "model": "faster-whisper tiny.en int8"}
    result["transcriber"] = t = transcriber_latency(args.utterances)
    print(f"\nSpeech on {result['cpu']} ({result['cores']} cores), {result['model']}")
    print(f"{'transcriber (real-time feed)':<44}{'value':>10}")
    print(f"{'finals / utterances':<44}{t['finals']:>7} / {t['utterances']}")
    print(f"{'end of speech → final, p50 (s)':<44}{t['latency_p50_s']:>10.3f}")
    print(f"{'end of speech → final, p95 (s)':<44}{t['latency_p95_s']:>10.3f}")
    print(f"{'  of which the silence rule (s)':<44}{t['end_silence_rule_s']:>10.3f}")
    print(f"{'  Whisper time per final, p50 (s)':<44}{t['final_stt_p50_s']:>10.3f}")
    print(f"{'real-time factor, finals (p50)':<44}{t['final_rtf_p50']:>10.3f}")
    print(f"{'Whisper s per speech s, partials included':<44}{t['all_stt_s_per_speech_s']:>10.3f}")
    if not args.skip_call:
        result["call"] = c = asyncio.run(call_fps(args.rounds, args.seconds))
        print(f"\n{'call, 512x512 @ 30 fps, passthrough':<44}{'value':>10}")
        print(f"{'video fps received, mic silent (baseline)':<44}{c['fps_silence']:>10.2f}")
        print(f"{'video fps received, mic speaking':<44}{c['fps_speech']:>10.2f}")
        print(f"{'ratio speaking / silent':<44}{c['fps_ratio']:>10.3f}")
        silent_fps, speaking_fps = c["server_fps_out_silence"], c["server_fps_out_speech"]
        finals_s, finals_q = c["finals_in_speech_rounds"], c["finals_in_silence_rounds"]
        p50, p95 = c["call_latency_p50_s"], c["call_latency_p95_s"]
        rows = [
            ("server fps_out silent / speaking", f"{silent_fps:.1f} / {speaking_fps:.1f}"),
            ("finals (speech rounds / silent rounds)", f"{finals_s} / {finals_q}"),
            ("in-call end of speech → final p50/p95 (s)", f"{p50:.2f} / {p95:.2f}"),
        ]
        for label, value in rows:
            print(f"{label:<44}{value:>10}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
