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

`--wer` (issue 22) measures words instead, through a call, for each model × plain/biased:
a generated set of painter prompts (tests/speechdata.py: `HELD_OUT_PROMPTS`, never tuned on;
`TUNE_PROMPTS`, tuned on) and the spoken command phrases, each utterance in one of 5 espeak-ng
voices × 2 speeds × clean / pink noise at 10 dB SNR (the noise runs through the pause after it),
then 6 s of pink noise alone. Reported: WER of the first finals per set, commands applied right
(after any correction), false commands on prompts, finals on noise alone, p50/p95 latency of
prompt finals (first `transcript` final) and of commands (`command` message) from the end of the
voiced audio, and the `uptime` load around each call. Writes bench/results/speech_wer.json.
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


WER_VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-x-rp", "en-us+m3")
WER_SPEEDS = (140, 175)
SNR_DB = 10.0


def wer_items(quick: bool = False) -> list[dict]:
    """Every utterance of the --wer set with its condition (voice, speed, noise), conditions rotating."""
    from tests.speechdata import COMMAND_PHRASES, HELD_OUT_PROMPTS, TUNE_PROMPTS

    conditions = [(v, sp, n) for n in (False, True) for sp in WER_SPEEDS for v in WER_VOICES]
    sets = [("held_out", HELD_OUT_PROMPTS), ("tuned", TUNE_PROMPTS), ("command", COMMAND_PHRASES)]
    items, k = [], 0
    for name, texts in sets:
        for text in texts[: 6 if quick else None]:
            voice, speed, noisy = conditions[k % len(conditions)]
            items.append({"set": name, "text": text, "voice": voice, "speed": speed, "noisy": noisy})
            k += 7  # step through the conditions so each set gets a spread of them
    return items


def wer_track(items: list[dict], gap_s: float, rate: int = 48000) -> tuple[np.ndarray, list[float], float]:
    """The mic track: the items one after the other, noise where asked; (audio, voiced ends, noise-only start)."""
    from tests.speechdata import add_noise, espeak

    parts, ends, t = [silence(1.0, rate)], [], 1.0
    for i, item in enumerate(items):
        speech = espeak(item["text"], item["voice"], item["speed"], rate)
        spans = voiced_spans(speech, rate)
        segment = np.concatenate([silence(0.4, rate), speech, silence(gap_s, rate)])
        if item["noisy"]:
            segment = add_noise(segment, SNR_DB, speech=speech, seed=i, rate=rate)
        ends.append(t + 0.4 + spans[-1][1])
        parts.append(segment)
        t += len(segment) / rate
    noise_at = t
    reference = espeak("a sentence of ordinary loudness", "en-us", 140, rate)
    parts.append(add_noise(silence(6.0, rate), SNR_DB, speech=reference, seed=99, rate=rate))
    parts.append(silence(2.0, rate))
    return np.concatenate(parts), ends, noise_at


def load_now() -> float:
    return os.getloadavg()[0]


async def wer_call(base: str, audio: np.ndarray, ends: list[float], noise_at: float, fps: float) -> dict:
    """One call playing the --wer track; what came back, matched to the utterances by time."""
    from tests.rtc_client import RtcClient

    mic = PcmAudioTrack(audio)
    client = RtcClient(base, audio=mic, fps=fps, settings={"voice_prompt": True})
    load_before = load_now()
    await client.connect()
    try:
        while not mic.done.is_set():
            await asyncio.sleep(0.2)
        await asyncio.sleep(3.0)
    finally:
        await client.close()
    start = mic._start or 0.0
    msgs = client.all_messages
    finals = [m for m in msgs if m.get("type") == "transcript" and m.get("final") and not m.get("revised")]
    finals = [m for m in finals if m.get("text")]
    out = []
    for k, end in enumerate(ends):
        lo, hi = start + end, start + (ends[k + 1] if k + 1 < len(ends) else noise_at)
        hit = next((m for m in finals if lo < m["_at"] < hi), None)
        row = {"latency": None, "text": "", "last_text": "", "command": None, "command_latency": None}
        if hit is not None:
            u = hit["utterance"]
            row["latency"], row["text"] = hit["_at"] - lo, hit["text"]
            texts = [
                m["text"] for m in msgs if m.get("type") == "transcript" and m.get("final") and m["utterance"] == u
            ]
            row["last_text"] = texts[-1]
            commands = [m for m in msgs if m.get("type") == "command" and m.get("utterance") == u]
            if commands:
                row["command_latency"] = commands[0]["_at"] - lo
                effective = None
                for m in commands:
                    effective = None if m["command"] == "undo" else m["command"]
                row["command"] = effective
                row["commands_seen"] = [m["command"] for m in commands]
        out.append(row)
    noise_finals = [m["text"] for m in finals if m["_at"] > start + noise_at]
    stages, seen = [], set()
    for m in msgs:
        ms = m.get("speech_ms") if m.get("type") == "stats" else None
        if ms and ms.get("total") not in seen:
            seen.add(ms.get("total"))
            stages.append(ms)
    stage_p50 = {k: pct([x[k] for x in stages if k in x], 50) for k in ("eos", "wait", "decode", "send", "total")}
    stage_p95 = {k: pct([x[k] for x in stages if k in x], 95) for k in ("eos", "wait", "decode", "send", "total")}
    return {
        "rows": out,
        "noise_finals": noise_finals,
        "load": [load_before, load_now()],
        "stages_p50_ms": stage_p50,
        "stages_p95_ms": stage_p95,
    }


def summarise(items: list[dict], rows: list[dict]) -> dict:
    from speakdraw.speech.commands import fuzzy_command

    out: dict = {}
    for name in ("held_out", "tuned"):
        pairs = [(it, r) for it, r in zip(items, rows, strict=True) if it["set"] == name]
        out[f"wer_{name}"] = wer([it["text"] for it, _ in pairs], [r["text"] for _, r in pairs])
        out[f"wer_{name}_last"] = wer([it["text"] for it, _ in pairs], [r["last_text"] for _, r in pairs])
        for noisy in (False, True):
            sub = [(it, r) for it, r in pairs if it["noisy"] == noisy]
            out[f"wer_{name}_{'noisy' if noisy else 'clean'}"] = wer(
                [i["text"] for i, _ in sub], [r["text"] for _, r in sub]
            )
    cmd = [(it, r) for it, r in zip(items, rows, strict=True) if it["set"] == "command"]
    out["commands_right"] = sum(r["command"] == fuzzy_command(it["text"]).command for it, r in cmd)
    out["commands"] = len(cmd)
    out["command_misses"] = [
        (it["text"], it["voice"], it["speed"], it["noisy"], r["text"], r.get("commands_seen"))
        for it, r in cmd
        if r["command"] != fuzzy_command(it["text"]).command
    ]
    prompts = [(it, r) for it, r in zip(items, rows, strict=True) if it["set"] != "command"]
    out["false_commands"] = [(it["text"], r["text"], r["command"]) for it, r in prompts if r.get("commands_seen")]
    lat = [r["latency"] for _, r in prompts if r["latency"] is not None]
    clat = [r["command_latency"] for _, r in cmd if r["command_latency"] is not None]
    out["prompt_latency_p50_s"], out["prompt_latency_p95_s"] = pct(lat, 50), pct(lat, 95)
    out["command_latency_p50_s"], out["command_latency_p95_s"] = pct(clat, 50), pct(clat, 95)
    out["prompt_finals"] = f"{len(lat)}/{len(prompts)}"
    out["command_acted"] = f"{len(clat)}/{len(cmd)}"
    return out


async def wer_bench(args) -> dict:
    from tests import rtc_client
    from tests.serverproc import ServerProcess

    original = rtc_client.RtcClient._on_message

    def stamped(self, raw):  # arrival time of every message
        original(self, raw)
        self.all_messages[-1]["_at"] = time.monotonic()

    rtc_client.RtcClient._on_message = stamped
    items = wer_items(args.quick)
    audio, ends, noise_at = wer_track(items, args.gap)
    configs = [(m, bias) for m in args.models.split(",") for bias in (False, True)]
    if args.biased_only:
        configs = [(m, True) for m in args.models.split(",")]
    results = {}
    try:
        for model, bias in configs:
            flags = ["--stt-model", model] + ([] if bias else ["--no-stt-vocabulary"])
            server = ServerProcess(*flags, engine="passthrough", stt="faster-whisper")
            try:
                server.wait_ready(300)
                health = server.health()
                r = await wer_call(server.base, audio, ends, noise_at, args.fps)
                chosen = next((ln for ln in server.log_text().splitlines() if "speech model" in ln), "")
            finally:
                server.stop()
            key = f"{model} {'biased' if bias else 'plain'}"
            results[key] = {**summarise(items, r["rows"]), "load": r["load"], "noise_finals": r["noise_finals"]}
            results[key]["stages_p50_ms"], results[key]["stages_p95_ms"] = r["stages_p50_ms"], r["stages_p95_ms"]
            results[key]["rows"] = [{**it, **row} for it, row in zip(items, r["rows"], strict=True)]
            results[key]["server_model_line"] = chosen.strip()
            results[key]["engine"] = health.get("engine")
            s = results[key]
            print(
                f"  {key}: held-out WER {s['wer_held_out']:.3f}, tuned {s['wer_tuned']:.3f}, commands "
                f"{s['commands_right']}/{s['commands']}, prompt p95 {s['prompt_latency_p95_s']:.2f} s, command p95 "
                f"{s['command_latency_p95_s']:.2f} s, load {r['load'][0]:.1f}-{r['load'][1]:.1f}",
                flush=True,
            )
    finally:
        rtc_client.RtcClient._on_message = original
    return {"items": len(items), "results": results}


def print_wer(result: dict) -> None:
    print(
        f"\nSpeech words through a call on {result['cpu']} ({result['cores']} cores), "
        f"{result['wer']['items']} utterances"
    )
    head = f"{'model / decoding':<22}{'held-out':>9}{'tuned':>7}{'noisy':>7}{'cmds':>7}{'false':>6}{'noise':>6}"
    head += f"{'prompt p50/p95 s':>18}{'cmd p50/p95 s':>16}{'load':>10}"
    print(head)
    for key, s in result["wer"]["results"].items():
        print(
            f"{key:<22}{s['wer_held_out']:>9.3f}{s['wer_tuned']:>7.3f}{s['wer_held_out_noisy']:>7.3f}"
            f"{s['commands_right']:>4}/{s['commands']:<2}{len(s['false_commands']):>6}{len(s['noise_finals']):>6}"
            f"{s['prompt_latency_p50_s']:>10.2f}/{s['prompt_latency_p95_s']:<7.2f}"
            f"{s['command_latency_p50_s']:>8.2f}/{s['command_latency_p95_s']:<7.2f}"
            f"{s['load'][0]:>5.1f}-{s['load'][1]:.1f}"
        )
    print(f"\n{'stages p50/p95 (ms)':<22}" + "".join(f"{k:>14}" for k in ("eos", "wait", "decode", "send")))
    for key, s in result["wer"]["results"].items():
        p50, p95 = s["stages_p50_ms"], s["stages_p95_ms"]
        print(f"{key:<22}" + "".join(f"{p50[k]:>7.0f}/{p95[k]:<6.0f}" for k in ("eos", "wait", "decode", "send")))
    print(
        "held-out WER clean / noisy:",
        {
            k: (round(s["wer_held_out_clean"], 3), round(s["wer_held_out_noisy"], 3))
            for k, s in result["wer"]["results"].items()
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=5)
    parser.add_argument("--gap", type=float, default=2.0, help="seconds of silence between sentences")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--skip-wer", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/speech.json (speech_wer.json)")
    parser.add_argument("--wer", action="store_true", help="the words benchmark (issue 22): WER, commands, latency")
    parser.add_argument("--models", default="tiny.en,base", help="--wer: models to compare (auto = the default)")
    parser.add_argument("--biased-only", action="store_true", help="--wer: skip the plain decodes")
    parser.add_argument("--quick", action="store_true", help="--wer: 6 utterances per set")
    args = parser.parse_args()
    if args.wer:
        if args.gap == 2.0:
            args.gap = 1.8
        result = {"cpu": cpu_name(), "cores": os.cpu_count(), "load_at_start": os.getloadavg()}
        result["wer"] = asyncio.run(wer_bench(args))
        print_wer(result)
        out = args.out or REPO / "bench" / "results" / "speech_wer.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=float))
        print(f"\nwrote {out}")
        return
    args.out = args.out or REPO / "bench" / "results" / "speech.json"

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
