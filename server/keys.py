"""Typed keys of the aiohttp app's shared values (aiohttp wants AppKey, not strings)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from server.config import ServerConfig

CONFIG = web.AppKey("config", ServerConfig)
LISTENER_HOSTS = web.AppKey("listener_hosts", dict)  # port -> the host that listener is bound to
LOAD_TASK = web.AppKey("load_task", asyncio.Future)  # start-up model loading
STT = web.AppKey("stt", Any)  # a SpeechToText for /api/transcribe, when given directly (tests)
