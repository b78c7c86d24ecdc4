"""The `control` data channel protocol (README.md, Data channel): settings, prompt, ping in; replies and errors out.

Any message it cannot take gets an `error` reply; the channel stays open and nothing changes.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from pydantic import ValidationError


class SettingsTarget(Protocol):
    def update_settings(self, partial: dict[str, Any]) -> dict[str, Any]:
        """Validate and apply; return all current settings; raise ValidationError/TypeError to refuse."""


def error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        parts.append(f"{where}: {err.get('msg')}")
    return "; ".join(parts)


def handle_message(raw: str | bytes, target: SettingsTarget, max_bytes: int) -> dict[str, Any] | None:
    """One incoming message → the reply to send (or None)."""
    if isinstance(raw, bytes):
        return error("bad_message", "binary messages are not accepted; send JSON text")
    if len(raw.encode("utf-8", "replace")) > max_bytes:
        return error("too_large", f"message larger than {max_bytes} bytes")
    try:
        message = json.loads(raw)
    except json.JSONDecodeError as exc:
        return error("bad_json", f"not valid JSON: {exc.msg} at position {exc.pos}")
    except RecursionError:
        return error("too_deep", "JSON nested too deeply")
    except ValueError as exc:  # e.g. numbers too long to convert
        return error("bad_json", f"not valid JSON: {exc}")
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return error("bad_message", 'expected a JSON object with a string "type"')
    kind = message["type"]
    if kind == "ping":
        return {"type": "pong", "t": message.get("t"), "server_time": time.time() * 1000.0}
    if kind == "settings":
        return _apply(target, message.get("settings"))
    if kind == "prompt":
        text = message.get("text")
        if not isinstance(text, str):
            return error("invalid_settings", 'prompt message needs a string "text"')
        return _apply(target, {"prompt": text})
    return error("unknown_type", f"unknown message type {kind!r}; expected settings, prompt or ping")


def _apply(target: SettingsTarget, partial: Any) -> dict[str, Any]:
    if not isinstance(partial, dict):
        return error("invalid_settings", '"settings" must be a JSON object')
    try:
        current = target.update_settings(partial)
    except ValidationError as exc:
        return error("invalid_settings", _validation_message(exc))
    except (TypeError, ValueError) as exc:
        return error("invalid_settings", str(exc))
    return {"type": "settings", "settings": current}
