"""The startup banner: where to point a browser, and a QR code a phone can scan."""

from __future__ import annotations

import io

import qrcode

from server import netaddr
from server.config import ServerConfig


def join_urls(config: ServerConfig) -> tuple[str, str | None]:
    """(desktop URL, phone URL or None). The phone URL carries the token."""
    desktop = f"http://{config.host}:{config.port}/"
    if config.token and config.token_explicit:
        desktop += f"?token={config.token}"
    phone = None
    if config.https_port:
        host = netaddr.phone_host()  # the default route's interface address, not the hostname (127.0.1.1)
        phone = f"https://{host}:{config.https_port}/" + (f"?token={config.token}" if config.token else "")
    return desktop, phone


def banner(config: ServerConfig, engine: str, warnings: list[str]) -> str:
    desktop, phone = join_urls(config)
    lines = ["", "SpeakDraw is up", f"  engine:  {engine}", f"  desktop: {desktop}"]
    if phone:
        lines.append(f"  phone:   {phone}   (self-signed certificate: accept it once)")
        lines += [f"  also:    https://{a}:{config.https_port}/" for a in netaddr.lan_addresses()[1:]]
        lines.append(netaddr.turn_hint(config))
    lines += [f"  warning: {w}" for w in warnings]
    text = "\n".join(lines) + "\n"
    if phone:
        qr = qrcode.QRCode(border=1)
        qr.add_data(phone)
        out = io.StringIO()
        qr.print_ascii(out=out, invert=True)
        text += out.getvalue()
    return text


def models_line(engine: str, warnings: list[str]) -> str:
    """Printed when the models finish loading, after the banner."""
    lines = [f"SpeakDraw models ready: engine {engine}"] + [f"  warning: {w}" for w in warnings]
    return "\n".join(lines)
