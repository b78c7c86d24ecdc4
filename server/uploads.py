"""Reading an uploaded file — the raw body or a multipart `file` field — never past its size limit."""

from __future__ import annotations

from aiohttp import web

CHUNK = 64 * 1024
MULTIPART_SLACK = 64 * 1024  # form framing around the file itself


class Refused(Exception):
    """An upload we do not take: HTTP status, error code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def _read_limited(reader, limit: int, what: str) -> bytes:
    buf = bytearray()
    while True:
        chunk = await reader.read_chunk(CHUNK) if hasattr(reader, "read_chunk") else await reader.read(CHUNK)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise Refused(413, "too_large", f"{what} is at most {limit} bytes")


async def read_upload(request: web.Request, limit: int, what: str = "an upload") -> bytes:
    """The `file` field of a multipart form, or the raw body; Refused (413) past `limit`."""
    if request.content_length is not None and request.content_length > limit + MULTIPART_SLACK:
        raise Refused(413, "too_large", f"{what} is at most {limit} bytes")  # no need to read it to know
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        async for part in reader:
            if getattr(part, "name", None) == "file":
                return await _read_limited(part, limit, what)
        raise Refused(400, "bad_request", 'the form has no "file" field')
    return await _read_limited(request.content, limit, what)
