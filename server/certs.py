"""A self-signed certificate for the HTTPS listener, so a phone on the LAN gets a secure context."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.netaddr import lan_addresses

CERT_NAME = "speakdraw-cert.pem"
KEY_NAME = "speakdraw-key.pem"


def _covers(cert_path: Path, addresses: list[str]) -> bool:
    """Whether an existing certificate names every current LAN address (a new network needs a new one)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound, OSError):
        return False
    named = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return all(addr in named for addr in addresses)


def ensure_self_signed(certs_dir: Path) -> tuple[Path, Path]:
    """Return (cert, key), generating them on first run; the key file is created 0600."""
    cert_path, key_path = certs_dir / CERT_NAME, certs_dir / KEY_NAME
    if cert_path.exists() and key_path.exists() and _covers(cert_path, lan_addresses()):
        return cert_path, key_path
    certs_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(socket.gethostname())]
    for addr in ["127.0.0.1", "::1", *lan_addresses()]:
        names.append(x509.IPAddress(ipaddress.ip_address(addr)))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SpeakDraw self-signed")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_bytes)
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
