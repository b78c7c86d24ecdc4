"""The HTTP and HTTPS listeners of `speakdraw serve` and of the cluster's front door, and the signals that stop them.

Both commands listen the same way (README "Command line"): plain HTTP on `--host/--port`, HTTPS on
`--https-port` with `--cert/--key` or a self-signed certificate made in `certs/`, the redacting access
log, and SIGINT/SIGTERM setting one `stop` event instead of killing the loop.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from pathlib import Path

from aiohttp import web

from server.access_log import RedactingAccessLogger
from server.certs import ensure_self_signed


async def start_listeners(
    app: web.Application,
    *,
    host: str,
    port: int,
    https_host: str,
    https_port: int,
    cert: Path | None,
    key: Path | None,
    certs_dir: Path,
) -> web.AppRunner:
    """Start `app` on its listeners; the caller cleans up the returned runner."""
    runner = web.AppRunner(app, handle_signals=False, access_log_class=RedactingAccessLogger)
    await runner.setup()
    sites = [web.TCPSite(runner, host, port)]
    if https_port:
        cert, key = (cert, key) if cert and key else ensure_self_signed(certs_dir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        sites.append(web.TCPSite(runner, https_host, https_port, ssl_context=context))
    for site in sites:
        await site.start()
    return runner


def stop_event_on_signals(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """An event SIGINT and SIGTERM set (a cluster worker re-binds SIGTERM to drain first)."""
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
