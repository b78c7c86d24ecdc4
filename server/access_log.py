"""The access log, with every token redacted: `?token=` in the path and in the Referer never reaches a log line."""

from __future__ import annotations

import logging
import re

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&#\s\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    return TOKEN_IN_QUERY.sub(r"\1<redacted>", text)


class RedactingAccessLogger(AbstractAccessLogger):
    """One line per request, like aiohttp's default, with tokens replaced by `<redacted>`."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        referer = request.headers.get("Referer", "-")
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %s "%s" %.1f ms',
            request.remote,
            request.method,
            redact(request.path_qs),
            request.version.major,
            request.version.minor,
            response.status,
            response.body_length,
            redact(referer),
            time * 1000.0,
        )


class RedactingFilter(logging.Filter):
    """For every other logger of ours: a message that carries a token is redacted before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message.lower():
            record.msg, record.args = redact(message), None
        return True


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs every request it cannot parse (bad request line, header too long, bad chunking) with a
    traceback at ERROR, after answering 400: any client could fill the log. One line, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and 400 <= (error.code or 400) < 500:
            first = str(error.message).strip().splitlines()[0] if error.message else ""
            record.msg, record.args = f"{record.getMessage()}: {type(error).__name__} {first}"[:300], None
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
