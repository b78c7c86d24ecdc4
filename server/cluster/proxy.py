"""Forwarding one HTTP request from the front door to a worker, the response streamed back as it comes.

The body of the worker's response is relayed chunk by chunk as it arrives (`iter_any`), never buffered
whole, so an MJPEG stream (`multipart/x-mixed-replace`, endless) reaches the viewer part by part; when
the viewer goes, the upstream connection is closed, so the worker's MJPEG viewer goes too.
Hop-by-hop and proxy headers are not forwarded (a worker would otherwise treat the request as proxied),
nor the caller's token: the front door sends the worker's own.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from server.errors import json_error

log = logging.getLogger(__name__)

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
PROXY_HEADERS = {"forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host"}
NOT_FORWARDED = HOP_BY_HOP | PROXY_HEADERS | {"authorization", "cookie"}
CONNECT_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 60.0  # everything but streams (offers gather ICE candidates: seconds at most)


class WorkerUnreachable(Exception):
    """The worker did not take the connection (dead, restarting): the caller marks it lost."""


def request_headers(request: web.Request, token: str | None) -> CIMultiDict[str]:
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def query_without_token(request: web.Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.rel_url.query.items() if k != "token"]


async def send(
    http: aiohttp.ClientSession,
    request: web.Request,
    base: str,
    token: str | None,
    body: bytes | None = None,
    path: str | None = None,
) -> aiohttp.ClientResponse:
    """Open the upstream request (the caller reads and releases the response). WorkerUnreachable if it is down."""
    data = body if body is not None else (await request.read() if request.body_exists else None)
    streaming = request.method == "GET"
    timeout = aiohttp.ClientTimeout(
        total=None if streaming else REQUEST_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S, connect=CONNECT_TIMEOUT_S
    )
    try:
        return await http.request(
            request.method,
            base + (path or request.rel_url.path),
            params=query_without_token(request),
            headers=request_headers(request, token),
            data=data,
            timeout=timeout,
            allow_redirects=False,
        )
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionError) as exc:
        raise WorkerUnreachable(str(exc)) from exc


async def relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    """Copy the worker's response to the caller, chunk by chunk as it arrives."""
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    for name, value in upstream.headers.items():
        if name.lower() not in HOP_BY_HOP:
            response.headers.add(name, value)
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    try:
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
    except (ConnectionResetError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        log.debug("relay of %s ended: %r", request.rel_url.path, exc)  # the viewer left, or the worker went
    finally:
        upstream.close()  # a stream the viewer left: the worker sees its viewer go
    return response


async def forward(
    http: aiohttp.ClientSession, request: web.Request, base: str, token: str | None, path: str | None = None
) -> web.StreamResponse:
    """send + relay; a worker that cannot be reached answers 502 `worker_unreachable`."""
    try:
        upstream = await send(http, request, base, token, path=path)
    except WorkerUnreachable as exc:
        return json_error(502, "worker_unreachable", f"the worker that serves this is not reachable: {exc}")
    return await relay(request, upstream)
