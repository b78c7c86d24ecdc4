"""This host's addresses as a phone on the same network sees them: for the join URL, its QR code, the certificate.

Resolving the hostname is not enough: many Debian/Ubuntu installs map it to 127.0.1.1, and
the banner then printed a `https://localhost:…` URL no phone can open. The interfaces are
enumerated instead (`ifaddr`, which aioice already depends on), and the address of the
default route comes first.
"""

from __future__ import annotations

import ipaddress
import socket

import ifaddr


def interface_addresses() -> list[str]:
    """Every IPv4 address of every interface (loopback included), in the order the OS lists them."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and ip.ip not in found:
                found.append(ip.ip)
    return found


def default_route_address() -> str | None:
    """The source address the kernel would use for the default route, or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("198.51.100.1", 9))  # TEST-NET-2: routed by the default route, nothing sent
            addr = sock.getsockname()[0]
        except OSError:
            return None
    return None if addr in ("0.0.0.0", "") else str(addr)


def _usable(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def lan_addresses() -> list[str]:
    """Non-loopback IPv4 addresses a phone could reach, the default route's first; [] when there are none."""
    addresses = [a for a in interface_addresses() if _usable(a)]
    default = default_route_address()
    if default in addresses:  # an interface's address, moved to the front
        addresses = [default] + [a for a in addresses if a != default]
    return addresses


def phone_host() -> str:
    """The host part of the phone join URL: the best LAN address, `localhost` only when there is none."""
    lan = lan_addresses()
    return lan[0] if lan else "localhost"


def turn_hint(config: object) -> str:
    """One banner line: the TURN relay in use, or how to add one for phones on cellular networks."""
    turn = list(getattr(config, "turn_urls", []) or []) + [
        u for u in getattr(config, "ice_servers", []) or [] if u.startswith("turn")
    ]
    if turn:
        return f"  turn:    {turn[0].split('@')[-1]} (phones behind carrier NAT relay through it)"
    return (
        "  turn:    none; phones on cellular data may need one: run coturn with contrib/coturn/turnserver.conf, "
        "then --turn-url turn:<this host>:3478 --turn-secret <its static-auth-secret>"
    )
