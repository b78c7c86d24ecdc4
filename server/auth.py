"""Bearer-token access for /api/*, /whip and /whep on listeners that need it.

A listener bound to loopback needs no token (the desktop's own browser), unless `--token` was
given. A request that came through a proxy (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`) is not
"loopback" whatever its socket address: a local reverse proxy or tunnel would otherwise expose
the API to the world; such a request needs the token, and is refused when none is configured.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable

from aiohttp import web

from server.errors import json_error
from server.state import LISTENER_HOSTS, STATE

PROTECTED_PREFIXES = ("/api/", "/whip", "/whep")
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Host")


def new_token() -> str:
    return secrets.token_urlsafe(16)


def request_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer ") :].strip()
    return request.query.get("token")


def _as_bytes(text: str) -> bytes:
    """Header text as the bytes that came in (aiohttp keeps undecodable bytes as surrogates)."""
    return text.encode("utf-8", "surrogateescape")


def token_matches(given: str, expected: str) -> bool:
    try:
        return hmac.compare_digest(_as_bytes(given), _as_bytes(expected))
    except (UnicodeError, TypeError):  # bytes no header could carry: not the token
        return False


def proxied(request: web.Request) -> bool:
    return any(name in request.headers for name in PROXY_HEADERS)


def access_refusal(
    request: web.Request,
    token: str | None,
    needs_token: Callable[[str], bool],
    listener_hosts: dict[int, str],
    fallback_host: str,
) -> web.Response | None:
    """None when the request may pass, else its 401: the one rule for `serve` and the cluster's front door.

    `needs_token(host)`: whether the listener bound to `host` (found by the request's socket port in
    `listener_hosts`) needs the token; a proxied request always does, and with no token it is refused."""
    via_proxy = proxied(request)
    if not token:
        if via_proxy:
            return json_error(
                401, "unauthorized", "requests through a proxy need a token; start the server with --token"
            )
        return None
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    listener = listener_hosts.get(sockname[1] if sockname else None, fallback_host)
    if via_proxy or needs_token(listener):
        given = request_token(request)
        if given is None:
            return json_error(401, "unauthorized", "missing token: send 'Authorization: Bearer <token>' or ?token=")
        if not token_matches(given, token):
            return json_error(401, "unauthorized", "wrong token")
    return None


@web.middleware
async def token_middleware(request: web.Request, handler) -> web.StreamResponse:
    if request.path.startswith(PROTECTED_PREFIXES):
        config = request.app[STATE].config
        refused = access_refusal(
            request, config.token, config.token_required_on, request.app[LISTENER_HOSTS], config.https_host
        )
        if refused is not None:
            return refused
    return await handler(request)
