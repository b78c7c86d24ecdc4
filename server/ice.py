"""ICE servers: `--ice-server` URLs (TURN may carry `user:pass@`), TURN REST credentials, RTCConfiguration.

A phone behind carrier NAT often reaches the server only through a TURN relay. coturn's
`use-auth-secret` checks the TURN REST scheme: username `"<expiry unix time>:<random>"`,
credential `base64(HMAC-SHA1(secret, username))`. The server mints a fresh pair for every
`/api/ice` request and for each of its own peer connections, so no long-lived TURN password
is ever shipped to a page.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

# stun:host[:port]  turn:[user:pass@]host[:port][?transport=udp|tcp]  (turns: too); IPv6 hosts in [brackets]
_URL = re.compile(
    r"(?P<scheme>stuns?|turns?):(?:(?P<user>[^:@/?]*):(?P<password>[^@/?]*)@)?"
    r"(?P<host>\[[0-9a-fA-F:.]+\]|[^:?/@\[\]]+)(?::(?P<port>\d{1,5}))?(?:\?transport=(?P<transport>udp|tcp))?"
)
TRANSPORT_POLICIES = ("all", "relay")


class IceConfigError(ValueError):
    """A malformed `--ice-server` / `--turn-url`: the CLI refuses to start with it."""


@dataclass(frozen=True)
class IceServerUrl:
    """One parsed URL; `url` is the credential-free form browsers and aiortc accept."""

    scheme: str
    host: str
    port: int | None
    transport: str | None
    username: str | None = None
    credential: str | None = None

    @property
    def url(self) -> str:
        text = f"{self.scheme}:{self.host}"
        if self.port is not None:
            text += f":{self.port}"
        if self.transport is not None:
            text += f"?transport={self.transport}"
        return text

    @property
    def is_turn(self) -> bool:
        return self.scheme.startswith("turn")


def parse_ice_url(text: str) -> IceServerUrl:
    """`turn:user:pass@host:3478?transport=udp` → IceServerUrl; user/pass may be %-encoded."""
    match = _URL.fullmatch(text.strip())
    if match is None:
        expected = "stun:host[:port] or turn:[user:pass@]host[:port][?transport=udp|tcp]"
        raise IceConfigError(f"not a STUN/TURN URL: {text!r} (expected {expected})")
    scheme = match["scheme"]
    if scheme.startswith("stun") and (match["user"] is not None or match["transport"]):
        raise IceConfigError(f"a STUN URL takes no credentials or transport: {text!r}")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise IceConfigError(f"port out of range in {text!r}")
    user = unquote(match["user"]) if match["user"] is not None else None
    password = unquote(match["password"]) if match["password"] is not None else None
    return IceServerUrl(scheme, match["host"], port, match["transport"], user, password)


def turn_rest_credentials(secret: str, ttl_s: int, now: float | None = None) -> tuple[str, str]:
    """(username, credential) valid for `ttl_s` seconds, as coturn's `use-auth-secret` verifies them."""
    expiry = int(time.time() if now is None else now) + int(ttl_s)
    username = f"{expiry}:{secrets.token_hex(8)}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


class IceServers:
    """The server's ICE configuration: static URLs plus, with a secret, TURN URLs with minted credentials."""

    def __init__(
        self,
        urls: list[str] | None = None,
        turn_urls: list[str] | None = None,
        turn_secret: str | None = None,
        turn_ttl_s: int = 24 * 3600,
        transport_policy: str = "all",
    ) -> None:
        self.static = [parse_ice_url(u) for u in urls or []]
        self.turn = [parse_ice_url(u) for u in turn_urls or []]
        for entry in self.turn:
            if not entry.is_turn:
                raise IceConfigError(f"--turn-url must be a turn: or turns: URL, got {entry.url!r}")
            if entry.username is not None:
                raise IceConfigError("--turn-url takes no user:pass (credentials come from --turn-secret)")
        if self.turn and not turn_secret:
            raise IceConfigError("--turn-url needs --turn-secret (the static-auth-secret of coturn)")
        if turn_secret and not self.turn:
            raise IceConfigError("--turn-secret needs --turn-url (where the TURN server listens)")
        if transport_policy not in TRANSPORT_POLICIES:
            raise IceConfigError(f"ICE transport policy is one of {TRANSPORT_POLICIES}, got {transport_policy!r}")
        if transport_policy == "relay" and not self.has_turn:
            raise IceConfigError("a relay-only ICE policy needs a TURN server (--turn-url or a turn: --ice-server)")
        self.turn_secret = turn_secret
        self.turn_ttl_s = turn_ttl_s
        self.transport_policy = transport_policy

    @property
    def has_turn(self) -> bool:
        return bool(self.turn) or any(e.is_turn for e in self.static)

    def browser_servers(self, now: float | None = None) -> list[dict[str, Any]]:
        """The `iceServers` list of `/api/ice` (RTCIceServer dictionaries); fresh TURN credentials per call."""
        servers: list[dict[str, Any]] = []
        for entry in self.static:
            item: dict[str, Any] = {"urls": entry.url}
            if entry.username is not None:
                item.update(username=entry.username, credential=entry.credential or "")
            servers.append(item)
        if self.turn:
            assert self.turn_secret is not None
            username, credential = turn_rest_credentials(self.turn_secret, self.turn_ttl_s, now)
            servers.append({"urls": [e.url for e in self.turn], "username": username, "credential": credential})
        return servers

    def api_body(self) -> dict[str, Any]:
        """`GET /api/ice`: the servers and the policy the page should use."""
        return {"iceServers": self.browser_servers(), "iceTransportPolicy": self.transport_policy}

    def rtc_configuration(self) -> RTCConfiguration:
        """For the server's own peer connections: the same servers (aiortc uses one STUN and one TURN)."""
        servers = [
            RTCIceServer(urls=item["urls"], username=item.get("username"), credential=item.get("credential"))
            for item in self.browser_servers()
        ]
        policy = RTCIceTransportPolicy.RELAY if self.transport_policy == "relay" else RTCIceTransportPolicy.ALL
        # An explicit (possibly empty) list: aiortc would otherwise reach out to a public STUN server.
        return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


def from_config(config: Any) -> IceServers:
    """Build from a ServerConfig (fields ice_servers, turn_urls, turn_secret, turn_ttl_s, ice_transport_policy)."""
    return IceServers(
        urls=list(getattr(config, "ice_servers", []) or []),
        turn_urls=list(getattr(config, "turn_urls", []) or []),
        turn_secret=getattr(config, "turn_secret", None),
        turn_ttl_s=int(getattr(config, "turn_ttl_s", 24 * 3600)),
        transport_policy=getattr(config, "ice_transport_policy", "all"),
    )


PC_CLOSE_TIMEOUT_S = 3.0
_closing: set[asyncio.Task] = set()  # closes that outlived the timeout, finishing in the background


async def close_peer(pc: RTCPeerConnection, timeout_s: float = PC_CLOSE_TIMEOUT_S) -> None:
    """Close `pc`, waiting at most `timeout_s`: with its TURN server gone, aioice retries deleting the
    allocation for ~31 s (6 retransmissions), which would hold a hang-up, a resume or the shutdown."""
    task = asyncio.ensure_future(pc.close())
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        _closing.add(task)
        task.add_done_callback(_closing.discard)
