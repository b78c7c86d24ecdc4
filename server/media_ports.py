"""`--media-ports LO-HI` (or a list): every ICE host candidate the server gathers binds one of these UDP ports.

A GPU server behind a firewall or in a container can open only a few UDP ports. aioice binds
its host sockets to port 0 in `Connection.get_component_candidates`; that one method is the
seam. `PortRangeConnection` (server/aiortc_patches.py, with every other change to aiortc/aioice)
overrides it: host sockets are bound to one port of the range (the
same port number on every interface address, so one call uses one port), then server-reflexive
candidates are asked for those sockets, and the TURN allocation is left to aioice itself (a
relay candidate's port is the TURN server's, and its local socket only talks *out* to TURN).
It is put in place of the `Connection` that aiortc's ICE gatherer builds, and a request
middleware makes the app's pool current while a handler runs (contextvar): peer connections
made anywhere else in the process (a test client) are untouched. When every port is taken the
gatherer raises `MediaPortsExhausted`, which the offer handlers answer with 503 `no_media_ports`.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
from typing import Any

from aiohttp import web

MAX_PORTS = 65535
CURRENT_POOL: contextvars.ContextVar[PortPool | None] = contextvars.ContextVar("speakdraw_media_ports", default=None)


class MediaPortsExhausted(RuntimeError):
    """Every port of --media-ports is in use: the call cannot get a media socket."""


def parse_ports(text: str) -> list[int]:
    """`50000-50100`, `50000,50002` or a mix → sorted unique ports; ValueError on anything else."""
    ports: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo_text, _, hi_text = part.partition("-")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if hi_text else lo
        except ValueError:
            raise ValueError(f"--media-ports: {part!r} is not a port or LO-HI range") from None
        if not (1024 <= lo <= hi <= MAX_PORTS):
            raise ValueError(f"--media-ports: {part!r} must lie within 1024-65535, low end first")
        ports.update(range(lo, hi + 1))
    if not ports:
        raise ValueError("--media-ports: no ports given")
    return sorted(ports)


class PortPool:
    """The configured ports; `bind()` takes the next port free on every address (round robin)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = list(ports)
        self._next = 0

    async def bind(self, addresses: list[str], factory: Any) -> list[tuple[asyncio.DatagramTransport, Any]]:
        loop = asyncio.get_running_loop()
        for step in range(len(self.ports)):
            port = self.ports[(self._next + step) % len(self.ports)]
            bound: list[tuple[asyncio.DatagramTransport, Any]] = []
            in_use = False
            for address in addresses:
                try:
                    transport, protocol = await loop.create_datagram_endpoint(factory, local_addr=(address, port))
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        in_use = True
                        break
                    continue  # this address cannot be bound at all (aioice skips it too)
                bound.append((transport, protocol))
            if in_use or not bound:
                for transport, _ in bound:
                    transport.close()
                if not in_use:  # no address works on any port: not a matter of ports
                    return []
                continue
            self._next = (self._next + step + 1) % len(self.ports)
            return bound
        raise MediaPortsExhausted(f"all {len(self.ports)} media ports are in use")


def setup(app: web.Application, ports: list[int]) -> PortPool | None:
    """With ports: a middleware that makes this app's pool current (the connection class that reads it is
    `aiortc_patches.PortRangeConnection`, installed by `aiortc_patches.install`)."""
    if not ports:
        return None
    pool = PortPool(ports)

    @web.middleware
    async def media_ports_middleware(request: web.Request, handler) -> web.StreamResponse:
        token = CURRENT_POOL.set(pool)
        try:
            return await handler(request)
        finally:
            CURRENT_POOL.reset(token)

    app.middlewares.append(media_ports_middleware)
    return pool
