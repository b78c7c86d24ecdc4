"""One JSON error shape for every 4xx: {"error": {"code", "message"}}."""

from __future__ import annotations

from aiohttp import web


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


@web.middleware
async def json_errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    """aiohttp's own HTTP errors (413, 404, 405...) on /api become JSON errors; the server keeps serving."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}.get(
            exc.status, "bad_request"
        )
        return json_error(exc.status, code, exc.reason or exc.text or code)
