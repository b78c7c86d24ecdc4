"""`GET /metrics`: the app's Prometheus text (what is counted: server/metrics.py). No token: it is outside /api
and carries counts only."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from server.metrics import METRICS, Metrics  # noqa: F401  (Metrics: the name older imports use)


async def metrics_handler(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    # CONTENT_TYPE_LATEST carries a charset parameter, which aiohttp wants apart.
    content_type, _, params = CONTENT_TYPE_LATEST.partition(";")
    charset = params.partition("charset=")[2].strip() or None
    return web.Response(body=body, content_type=content_type.strip(), charset=charset)


def setup(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics_handler)
