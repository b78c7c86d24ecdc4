"""A call that joins while the models load gets passthrough frames at once, then the model's, and is told."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from aiohttp.test_utils import TestServer

from server.app import create_app
from server.config import ServerConfig
from server.state import STATE
from tests.rtc_client import QUADRANT_COLOURS, RtcClient, quadrant_means


async def test_call_during_model_loading_switches_to_the_model_when_ready():
    config = ServerConfig(https_port=0, engine="tiny", stt="off", matting="off")
    app = create_app(config)
    state = app[STATE]
    release = threading.Event()
    real_load = state.load_models

    def slow_load() -> None:  # the real loading code, held back until the test lets it go
        release.wait(30)
        real_load()

    state.load_models = slow_load
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client = RtcClient(str(server.make_url("")).rstrip("/"), settings={"passthrough_effect": "invert"})
    try:
        await client.connect()
        status = await client.expect("status")
        assert status["ready"] is False and status["engine"] == "passthrough"
        await client.wait_frames(10)  # frames flow while the model loads
        means = quadrant_means(client.frames[-1].image)
        assert np.abs(means - (255 - QUADRANT_COLOURS.astype(float))).max() < 30  # passthrough's invert

        release.set()
        status = await client.expect("status", timeout=30, where=lambda m: m["ready"])
        assert status["engine"] == "tiny"
        await client.wait_frames(10)
        session = next(iter(state.sessions.values()))
        assert session.pipeline.engine is state.engine and state.engine.name == "tiny"
        means = quadrant_means(client.frames[-1].image)
        assert np.abs(means - (255 - QUADRANT_COLOURS.astype(float))).max() > 30  # no longer passthrough
    finally:
        release.set()
        await client.close()
        await asyncio.sleep(0.2)
        await server.close()
