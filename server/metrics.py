"""The app's metrics observer: one CollectorRegistry per app (two apps in one process never mix), and the
hooks that move it. `GET /metrics` serves it (server/routes/metrics.py).

What is counted, and where the numbers come from:
- `speakdraw_active_sessions`: calls in `AppState.sessions`, read at scrape time.
- `speakdraw_frames_{in,out,dropped}_total`: camera frames taken off the tracks, frames handed to the
  WebRTC sender, frames replaced unprocessed in the 1-slot inbox (server/tracks.py hooks).
- `speakdraw_stage_latency_seconds{stage}`: `matte` and `diffuse` from the pipeline, `encode` = time the
  aiortc sender spends encoding + packetising a frame before it asks for the next, `total` = a frame's
  whole stay in the server: taken off the camera track → encoded and sent.
- `speakdraw_transcripts_total`: final transcripts sent to the page.
- `speakdraw_speech_latency_seconds{stage}`: per final, end of voiced audio → sent: `eos` (the silence rule),
  `wait` (speech thread busy), `decode` (Whisper), `send`, `total`; `speakdraw_speech_dropped_seconds_total`:
  live call audio skipped because the speech thread was behind.
- `speakdraw_errors_total{code}`: every error the server reports, by its error code (README.md, HTTP API): JSON error
  responses (HTTP), `error` messages on the control channel, and `pipeline_error` for failed frames.

/metrics is outside /api, so no token: it carries counts only (README.md lists it as an open route).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

# Seconds; from a 1 ms passthrough up to multi-second CPU diffusion steps.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGES = ("matte", "diffuse", "encode", "total")


def _by_stage(registry: CollectorRegistry, name: str, documentation: str) -> Histogram:
    return Histogram(name, documentation, ["stage"], buckets=LATENCY_BUCKETS, registry=registry)


class Metrics:
    """The app's metrics and the hooks that move them (VideoObserver of server/tracks.py, Session.send)."""

    def __init__(self, sessions: dict[str, Any] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.active_sessions = Gauge("speakdraw_active_sessions", "Calls in progress", registry=r)
        if sessions is not None:
            self.active_sessions.set_function(lambda: len(sessions))
        self.mjpeg_viewers = Gauge("speakdraw_mjpeg_viewers", "Open MJPEG output streams", registry=r)
        self.frames_in = Counter("speakdraw_frames_in", "Camera frames received", registry=r)
        self.frames_out = Counter("speakdraw_frames_out", "Transformed frames handed to the WebRTC sender", registry=r)
        self.frames_dropped = Counter(
            "speakdraw_frames_dropped", "Camera frames replaced unprocessed (model slower than camera)", registry=r
        )
        self.mjpeg_frames = Counter("speakdraw_mjpeg_frames_encoded", "JPEG encodes for MJPEG/snapshots", registry=r)
        self.latency = _by_stage(
            r,
            "speakdraw_stage_latency_seconds",
            "Per-frame latency by stage: matte, diffuse, encode (WebRTC encode+send), total (in server)",
        )
        self.transcripts = Counter("speakdraw_transcripts", "Final transcripts sent", registry=r)
        # Speech (server/call_speech.py): end of voiced audio → final, by stage; live audio dropped.
        self.speech_latency = _by_stage(
            r,
            "speakdraw_speech_latency_seconds",
            "Per final transcript: eos (silence rule), wait (speech thread), decode, send, total",
        )
        self.speech_dropped_s = Counter("speakdraw_speech_dropped_seconds", "Live audio skipped, behind", registry=r)
        self.errors = Counter("speakdraw_errors", "Errors reported to clients, by code", ["code"], registry=r)
        self._stage = {stage: self.latency.labels(stage=stage) for stage in STAGES}

    # ---- VideoObserver (server/tracks.py): on the event loop, cheap --------------------------
    def frame_in(self, dropped: bool) -> None:
        self.frames_in.inc()
        if dropped:
            self.frames_dropped.inc()

    def frame_processed(self, timings_ms: dict[str, float]) -> None:
        for stage in ("matte", "diffuse"):
            value = timings_ms.get(stage)
            if value:  # 0 = the stage did not run for this frame (e.g. mode "full": no matte)
                self._stage[stage].observe(value / 1000.0)

    def frame_failed(self) -> None:
        self.errors.labels(code="pipeline_error").inc()

    def frame_handed(self) -> None:
        self.frames_out.inc()

    def frame_sent(self, encode_ms: float, total_ms: float) -> None:
        self._stage["encode"].observe(encode_ms / 1000.0)
        self._stage["total"].observe(total_ms / 1000.0)

    # ---- AudioListener (server/call_speech.py): on the event loop ---------------------------
    def speech_final(self, stages_ms: dict[str, float]) -> None:
        for stage, value in stages_ms.items():
            self.speech_latency.labels(stage=stage).observe(value / 1000.0)

    def speech_dropped(self, seconds: float) -> None:
        self.speech_dropped_s.inc(seconds)

    # ---- Session.send ----------------------------------------------------------------------
    def message_sent(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "error":
            self.errors.labels(code=str(message.get("code", "unknown"))).inc()
        elif kind == "transcript" and message.get("final"):
            self.transcripts.inc()

    def http_error(self, status: int, body: bytes | None) -> None:
        code = f"http_{status}"
        if body:
            try:
                code = str(json.loads(body)["error"]["code"])
            except (ValueError, KeyError, TypeError):
                pass
        self.errors.labels(code=code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", Metrics)


@web.middleware
async def errors_metric_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Outermost: sees every 4xx/5xx, including the token middleware's 401s and aiohttp's own errors."""
    metrics = request.app[METRICS]
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            metrics.http_error(exc.status, None)
        raise
    if response.status >= 400:
        body = response.body if isinstance(response, web.Response) else None
        metrics.http_error(response.status, body if isinstance(body, bytes) else None)
    return response


def install(app: web.Application, sessions: dict[str, Any]) -> Metrics:
    """The app's registry, under METRICS, and the middleware that counts HTTP errors; the caller hands it to the
    sessions (AppState.observer)."""
    metrics = Metrics(sessions)
    app[METRICS] = metrics
    app.middlewares.insert(0, errors_metric_middleware)
    return metrics
