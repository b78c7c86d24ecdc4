"""Bearer-token access for /api/* on listeners that need it."""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web

from server.errors import json_error
from server.keys import CONFIG, LISTENER_HOSTS


def new_token() -> str:
    return secrets.token_urlsafe(16)


def request_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer ") :].strip()
    return request.query.get("token")


@web.middleware
async def token_middleware(request: web.Request, handler) -> web.StreamResponse:
    config = request.app[CONFIG]
    if request.path.startswith(("/api/", "/whip", "/whep")) and config.token:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        listener_host = request.app[LISTENER_HOSTS].get(sockname[1] if sockname else None, config.https_host)
        if config.token_required_on(listener_host):
            given = request_token(request)
            if given is None:
                return json_error(401, "unauthorized", "missing token: send 'Authorization: Bearer <token>' or ?token=")
            if not hmac.compare_digest(given.encode(), config.token.encode()):
                return json_error(401, "unauthorized", "wrong token")
    return await handler(request)
