"""Speech that keeps up (issue 16): end of voiced audio → final transcript, through a real call.

Prints a table and writes bench/results/speech.json. Everything is compared inside one run
(this shared host's speed drifts from hour to hour):

- Two servers (`speakdraw serve --engine passthrough --stt faster-whisper`, tiny.en int8),
  one on the new path and one on the old (`SPEAKDRAW_SPEECH_MODE=legacy`: 30 s beam-5
  decodes, fixed 500 ms end-of-speech rule). An aiortc client sends 512×512 video at
  `--fps` (30) and an Opus mic track: `--sentences` espeak-ng sentences in 2 voices,
  `--gap` s apart.
- Latency = arrival of the first `transcript` final of an utterance at the client − the
  moment the client sent the utterance's last *voiced* sample. Voiced ends are found from
  the samples (10 ms frames above −40 dB of the loudest), not from the file or the espeak spans.
- The stage breakdown (eos = silence rule, wait = speech thread busy, decode, send) comes
  from the `speech_ms` field of the server's `stats` messages.
- The naive way, in the same run: during a call with the mic silent (same video load), this
  process decodes each sentence offline once, beam 5, 30 s window, after a 0.5 s silence
  rule: naive latency = 0.5 s + that decode.
- Video fps received with speech on (new path, speaking) vs off (same server, mic silent).
- Held-out WER (sentences not in tests' SENTENCES), offline through the Transcriber: old vs new.

Rounds are interleaved (off, legacy, fast, naive) × `--rounds`.
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

from speakdraw.speech import load_stt  # noqa: E402
from tests.speechdata import SENTENCES, PcmAudioTrack, espeak, silence, speech_track, voiced_spans, wer  # noqa: E402

VOICES2 = ("en-us", "en+f3")
HELD_OUT = (
    "a lighthouse on a rocky shore at dawn",
    "paint my room like a jungle full of birds",
    "give the picture a soft blue glow",
    "a dragon flying over snowy mountains",
    "turn me into a marble statue",
    "draw a small boat on a calm lake",
    "a garden of yellow flowers in spring",
    "make it look like a comic book",
)


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


def held_out_wer(stt) -> dict:
    """Offline, through the Transcriber (feed waits for the speech thread): old options vs new."""
    from server.call_speech import LEGACY_OPTIONS
    from speakdraw.speech import SileroVAD, SpeechWorker, Transcriber, TranscriberOptions
    from tests.speechdata import to_int16

    items = [(s, v) for v in VOICES2 for s in HELD_OUT]
    audio, _ = speech_track(items, gap_s=1.2)
    vad = SileroVAD()
    out = {}
    for name, options in (("legacy", LEGACY_OPTIONS), ("fast", TranscriberOptions())):
        worker, events = SpeechWorker("bench-speech"), []
        opts = TranscriberOptions(**{**options.__dict__, "max_buffer_s": 600.0, "partials": False})
        tr = Transcriber(stt, vad, events.append, worker=worker, options=opts)
        pcm = to_int16(audio)
        for i in range(0, len(pcm), 320):
            tr.feed(pcm[i : i + 320])
            while tr.backlog_s > 0.2:
                time.sleep(0.005)
        tr.flush()
        tr.wait_idle(300)
        worker.close()
        last = {}
        for e in events:
            if e.final:
                last[e.utterance] = e.text
        texts = [last[u] for u in sorted(last)]
        out[name] = {
            "utterances": len(items),
            "finals": len(texts),
            "wer": wer([s for s, _ in items], texts) if len(texts) == len(items) else float("nan"),
            "whisper_s": tr.stats["stt_s"],
        }
    return out


async def call_round(base: str, audio: np.ndarray, ends: list[float], fps: float, naive=None) -> dict:
    """One call; `naive`: a blocking function run meanwhile in a thread (the offline decodes)."""
    from tests.rtc_client import RtcClient

    mic = PcmAudioTrack(audio)
    client = RtcClient(base, audio=mic, fps=fps)
    await client.connect()
    naive_result = None
    try:
        await asyncio.sleep(1.0)
        n0, t0 = client.frames_received, time.monotonic()
        if naive is not None:
            naive_result = await asyncio.get_running_loop().run_in_executor(None, naive)
        remaining = (mic._start or time.monotonic()) + len(audio) / 48000 - time.monotonic()
        await asyncio.sleep(max(0.0, remaining))
        n1, t1 = client.frames_received, time.monotonic()
        await asyncio.sleep(2.0)  # the last final
    finally:
        await client.close()
    finals = [m for m in client.all_messages if m.get("type") == "transcript" and m.get("final") and m.get("text")]
    firsts: dict[int, dict] = {}
    for m in finals:
        if not m.get("revised"):
            firsts.setdefault(m["utterance"], m)
    latency, texts = [], []
    start = mic._start or 0.0
    order = sorted(firsts.values(), key=lambda m: m["_at"])
    for k, end in enumerate(ends):
        sent_end = start + end
        next_end = start + ends[k + 1] if k + 1 < len(ends) else float("inf")
        hit = next((m for m in order if sent_end < m["_at"] < next_end), None)
        if hit is not None:
            latency.append(hit["_at"] - sent_end)
            texts.append(hit["text"])
            order.remove(hit)
    last_text = {}
    for m in finals:
        last_text[m["utterance"]] = m["text"]
    stages, seen = [], set()
    for m in client.all_messages:
        ms = m.get("speech_ms") if m.get("type") == "stats" else None
        if ms and ms.get("total") not in seen:
            seen.add(ms.get("total"))
            stages.append(ms)
    return {
        "fps": (n1 - n0) / (t1 - t0),
        "finals": len(firsts),
        "matched": len(latency),
        "latency": latency,
        "texts_first": texts,
        "texts_last": [last_text[u] for u in sorted(last_text)],
        "revisions": sum(1 for m in finals if m.get("revised")),
        "stages": stages,
        "naive": naive_result,
    }


def naive_decodes(stt, sentences: list[tuple[str, str]]):
    """The naive way: each sentence decoded once offline (30 s window, beam 5) after a 0.5 s silence rule."""

    def run() -> list[float]:
        out = []
        for text, voice in sentences:
            audio = np.concatenate([silence(0.3), espeak(text, voice), silence(0.2)])
            t = time.perf_counter()
            stt.transcribe(audio)
            out.append(0.5 + time.perf_counter() - t)
        return out

    return run


async def calls(args, stt) -> dict:
    from tests import rtc_client
    from tests.serverproc import ServerProcess

    original = rtc_client.RtcClient._on_message

    def stamped(self, raw):  # arrival time of every message
        original(self, raw)
        self.all_messages[-1]["_at"] = time.monotonic()

    rtc_client.RtcClient._on_message = stamped
    sentences = [(SENTENCES[i % len(SENTENCES)], VOICES2[i % 2]) for i in range(args.sentences)]
    speech, _ = speech_track(sentences, gap_s=args.gap, lead_s=1.0, rate=48000)
    speech = np.concatenate([speech, silence(1.0, 48000)])
    ends = [end for _, end in voiced_spans(speech, 48000)]
    assert len(ends) == len(sentences), f"found {len(ends)} voiced stretches for {len(sentences)} sentences"
    quiet = np.zeros_like(speech)
    servers = {
        "fast": ServerProcess(engine="passthrough", stt="faster-whisper"),
        "legacy": ServerProcess(engine="passthrough", stt="faster-whisper", env={"SPEAKDRAW_SPEECH_MODE": "legacy"}),
    }
    results: dict[str, list] = {"off": [], "legacy": [], "fast": [], "naive": []}
    try:
        for server in servers.values():
            server.wait_ready(240)
        for _ in range(args.rounds):
            for name in results:
                server = servers["legacy" if name == "legacy" else "fast"]
                audio = speech if name in ("legacy", "fast") else quiet
                naive = naive_decodes(stt, sentences) if name == "naive" else None
                r = await call_round(server.base, audio, ends, args.fps, naive)
                results[name].append(r)
                print(f"  round {name}: fps {r['fps']:.1f}, finals {r['finals']}, latency {np.round(r['latency'], 2)}")
    finally:
        for server in servers.values():
            server.stop()
        rtc_client.RtcClient._on_message = original
    refs = [s for s, _ in sentences]
    out: dict = {"sentences": len(sentences), "voiced_ends_s": [float(e) for e in ends], "fps_target": args.fps}
    for name in ("legacy", "fast"):
        lat = [x for r in results[name] for x in r["latency"]]
        stages = [s for r in results[name] for s in r["stages"]]
        out[name] = {
            "latency_p50_s": pct(lat, 50),
            "latency_p95_s": pct(lat, 95),
            "latency_max_s": max(lat) if lat else float("nan"),
            "matched": sum(r["matched"] for r in results[name]),
            "expected": len(sentences) * args.rounds,
            "stages_p50_ms": {k: pct([s[k] for s in stages if k in s], 50) for k in ("eos", "wait", "decode", "send")},
            "stages_p95_ms": {k: pct([s[k] for s in stages if k in s], 95) for k in ("eos", "wait", "decode", "send")},
            "wer_first": float(
                np.mean([wer(refs, r["texts_first"]) for r in results[name] if r["matched"] == len(refs)])
            )
            if any(r["matched"] == len(refs) for r in results[name])
            else float("nan"),
            "wer_last": float(
                np.mean([wer(refs, r["texts_last"]) for r in results[name] if len(r["texts_last"]) == len(refs)])
            )
            if any(len(r["texts_last"]) == len(refs) for r in results[name])
            else float("nan"),
            "revisions": sum(r["revisions"] for r in results[name]),
            "fps": float(np.mean([r["fps"] for r in results[name]])),
        }
    naive = [x for r in results["naive"] for x in r["naive"]]
    out["naive"] = {"latency_p50_s": pct(naive, 50), "latency_p95_s": pct(naive, 95)}
    out["fps_off"] = float(np.mean([r["fps"] for r in results["off"]]))
    out["fps_ratio_fast_vs_off"] = out["fast"]["fps"] / out["fps_off"]
    out["rounds_detail"] = results
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=5)
    parser.add_argument("--gap", type=float, default=2.0, help="seconds of silence between sentences")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--skip-wer", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "speech.json")
    args = parser.parse_args()

    stt = load_stt("faster-whisper", "tiny.en", "cpu")
    result: dict = {"cpu": cpu_name(), "cores": os.cpu_count(), "model": "faster-whisper tiny.en int8"}
    if not args.skip_wer:
        result["held_out"] = held_out_wer(stt)
    result["call"] = c = asyncio.run(calls(args, stt))

    print(f"\nSpeech on {result['cpu']} ({result['cores']} cores), {result['model']}")
    print(f"call: passthrough, 512x512 video at {args.fps:g} fps, {c['sentences']} sentences x {args.rounds} rounds")
    print(f"{'end of voiced audio -> first final (s)':<40}{'p50':>8}{'p95':>8}{'max':>8}{'matched':>9}")
    for name in ("legacy", "fast"):
        r = c[name]
        print(
            f"{name + ' (server path)':<40}{r['latency_p50_s']:>8.2f}{r['latency_p95_s']:>8.2f}"
            f"{r['latency_max_s']:>8.2f}{r['matched']:>5}/{r['expected']}"
        )
    print(
        f"{'naive: 0.5 s + one offline 30 s decode':<40}"
        f"{c['naive']['latency_p50_s']:>8.2f}{c['naive']['latency_p95_s']:>8.2f}"
    )
    print(f"{'fast p95 / naive p95':<40}{c['fast']['latency_p95_s'] / c['naive']['latency_p95_s']:>8.2f}")
    print(f"\n{'stage p50 / p95 (ms)':<24}" + "".join(f"{k:>14}" for k in ("eos", "wait", "decode", "send")))
    for name in ("legacy", "fast"):
        p50, p95 = c[name]["stages_p50_ms"], c[name]["stages_p95_ms"]
        print(f"{name:<24}" + "".join(f"{p50[k]:>7.0f}/{p95[k]:<6.0f}" for k in ("eos", "wait", "decode", "send")))
    print(f"\n{'call WER, first final / last':<40}{'legacy':>10}{'fast':>10}")
    print(
        f"{'':<40}{c['legacy']['wer_first']:>6.3f}/{c['legacy']['wer_last']:.3f}{c['fast']['wer_first']:>6.3f}/{c['fast']['wer_last']:.3f}"
    )
    print(f"{'corrections sent (fast)':<40}{c['fast']['revisions']:>10}")
    print(f"{'video fps: speech off / on (fast)':<40}{c['fps_off']:>10.2f}{c['fast']['fps']:>10.2f}")
    print(f"{'ratio on / off':<40}{c['fps_ratio_fast_vs_off']:>10.3f}")
    if "held_out" in result:
        h = result["held_out"]
        print(f"\n{'held-out WER (offline, 16 utt.)':<40}{'legacy':>10}{'fast':>10}")
        print(f"{'WER':<40}{h['legacy']['wer']:>10.3f}{h['fast']['wer']:>10.3f}")
        print(f"{'Whisper seconds':<40}{h['legacy']['whisper_s']:>10.1f}{h['fast']['whisper_s']:>10.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
