"""Units of "phones on real networks" (issue 15): ICE URLs, TURN REST credentials, ports, join URL, resume store."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import time
from types import SimpleNamespace

import pytest
import qrcode
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from server import banner, codecs, ice, media_ports, netaddr, resume
from server.cli import build_parser, config_from_args
from server.config import ServerConfig


def test_ice_server_urls_with_credentials():
    parsed = ice.parse_ice_url("turn:alice:s%40cret@turn.example.org:3478?transport=tcp")
    assert (parsed.scheme, parsed.host, parsed.port, parsed.transport) == ("turn", "turn.example.org", 3478, "tcp")
    assert (parsed.username, parsed.credential) == ("alice", "s@cret")
    assert parsed.url == "turn:turn.example.org:3478?transport=tcp"  # no secret in the URL the page sees
    assert ice.parse_ice_url("stun:stun.example.org").port is None
    assert ice.parse_ice_url("turns:[2001:db8::1]:5349").host == "[2001:db8::1]"
    for bad in ("http://x", "turn:", "stun:u:p@host", "turn:host:99999", "turn:host?transport=sctp"):
        with pytest.raises(ice.IceConfigError):
            ice.parse_ice_url(bad)


def test_turn_rest_credentials_are_coturns_scheme():
    now = 1_700_000_000
    username, credential = ice.turn_rest_credentials("s3cret", 600, now=now)
    expiry, _, name = username.partition(":")
    assert int(expiry) == now + 600 and len(name) >= 8
    expected = base64.b64encode(hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()).decode()
    assert credential == expected
    assert ice.turn_rest_credentials("s3cret", 600, now=now)[0] != username  # random part differs per request


def test_ice_servers_body_and_rtc_configuration():
    servers = ice.IceServers(
        urls=["stun:stun.example.org:3478", "turn:bob:pw@turn.example.org"],
        turn_urls=["turn:relay.example.org:3478?transport=udp", "turn:relay.example.org:3478?transport=tcp"],
        turn_secret="k",
        transport_policy="relay",
    )
    body = servers.api_body()
    assert body["iceTransportPolicy"] == "relay"
    stun, static_turn, minted = body["iceServers"]
    assert stun == {"urls": "stun:stun.example.org:3478"}
    assert static_turn == {"urls": "turn:turn.example.org", "username": "bob", "credential": "pw"}
    assert len(minted["urls"]) == 2 and int(minted["username"].split(":")[0]) > time.time()
    assert servers.api_body()["iceServers"][2]["username"] != minted["username"]  # minted per request
    config = servers.rtc_configuration()
    assert config.iceTransportPolicy == RTCIceTransportPolicy.RELAY
    assert [s.username for s in config.iceServers][1] == "bob"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"turn_urls": ["turn:h"]},  # no secret
        {"turn_secret": "k"},  # no URL
        {"turn_urls": ["stun:h"], "turn_secret": "k"},
        {"turn_urls": ["turn:u:p@h"], "turn_secret": "k"},
        {"transport_policy": "relay"},  # relay without TURN
    ],
)
def test_ice_config_errors(kwargs):
    with pytest.raises(ice.IceConfigError):
        ice.IceServers(**kwargs)


def test_cli_flags_fill_the_config():
    args = build_parser().parse_args(
        ["serve", "--turn-url", "turn:127.0.0.1:3478", "--turn-secret", "x", "--media-ports", "50000-50002,50010"]
        + ["--video-codec", "h264", "--max-bitrate", "800000", "--resume-window", "30"]
    )
    config = config_from_args(args)
    assert config.media_ports == [50000, 50001, 50002, 50010]
    assert (config.video_codec, config.max_bitrate, config.resume_window_s) == ("h264", 800000, 30.0)
    with pytest.raises(SystemExit):
        config_from_args(build_parser().parse_args(["serve", "--turn-url", "turn:h"]))  # no secret: refused


def test_parse_ports():
    assert media_ports.parse_ports("50000-50003") == [50000, 50001, 50002, 50003]
    assert media_ports.parse_ports("50010, 50000-50001") == [50000, 50001, 50010]
    for bad in ("", "x", "50010-50000", "80", "70000"):
        with pytest.raises(ValueError):
            media_ports.parse_ports(bad)


def test_codec_preferences_order():
    def mimes(choice):
        return [c.mimeType for c in codecs.preferred_codecs(choice) if c.mimeType != "video/rtx"]

    assert mimes("h264") and set(mimes("h264")) == {"video/H264"}
    assert mimes("vp8") == ["video/VP8"]
    # auto: the cheaper encoder first (VP8 until measured: software encoders), the other still offered
    assert mimes("auto")[0] == "video/VP8" and "video/H264" in mimes("auto")


# ---- join URL (issue 15, point 7) ----------------------------------------------------------------
def _adapters(*ips: str):
    return [SimpleNamespace(name=f"if{i}", ips=[SimpleNamespace(ip=ip)]) for i, ip in enumerate(ips)]


@pytest.fixture
def debian_hostname(monkeypatch):
    """The hostname resolves to 127.0.1.1, as on many Debian/Ubuntu installs."""
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "gethostname", lambda: "debian-box")

    def fake(host, *args, **kwargs):
        if host == "debian-box":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.1.1", 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def test_phone_url_and_qr_name_an_interface_address(monkeypatch, debian_hostname):
    monkeypatch.setattr(netaddr.ifaddr, "get_adapters", lambda: _adapters("127.0.0.1", "169.254.3.3", "10.20.30.40"))
    monkeypatch.setattr(netaddr, "default_route_address", lambda: None)
    payloads: list[str] = []
    monkeypatch.setattr(qrcode.QRCode, "add_data", lambda self, data, *a, **k: payloads.append(data))
    monkeypatch.setattr(qrcode.QRCode, "print_ascii", lambda self, out=None, **k: out.write("[qr]\n"))
    config = ServerConfig(https_port=8443, token="tok")
    _, phone = banner.join_urls(config)
    assert phone == "https://10.20.30.40:8443/?token=tok"
    text = banner.banner(config, "passthrough", [])
    assert f"phone:   {phone}" in text and payloads == [phone]
    assert "127.0.1.1" not in text and "localhost:8443" not in text


def test_default_route_address_comes_first(monkeypatch):
    monkeypatch.setattr(netaddr.ifaddr, "get_adapters", lambda: _adapters("127.0.0.1", "10.0.0.5", "192.168.1.7"))
    monkeypatch.setattr(netaddr, "default_route_address", lambda: "192.168.1.7")
    assert netaddr.lan_addresses() == ["192.168.1.7", "10.0.0.5"]
    text = banner.banner(ServerConfig(https_port=8443, token="t"), "x", [])
    assert "phone:   https://192.168.1.7:8443/" in text and "also:    https://10.0.0.5:8443/" in text


def test_only_loopback_falls_back_to_localhost(monkeypatch, debian_hostname):
    monkeypatch.setattr(netaddr.ifaddr, "get_adapters", lambda: _adapters("127.0.0.1"))
    assert banner.join_urls(ServerConfig(https_port=8443, token="t"))[1] == "https://localhost:8443/?token=t"


def test_default_route_address_is_an_interface_address():
    addr = netaddr.default_route_address()
    if addr is not None:  # a machine with a default route: its source address is one of ours
        assert addr in netaddr.interface_addresses()


def test_certificate_names_the_lan_addresses(monkeypatch, tmp_path):
    from cryptography import x509

    from server import certs

    monkeypatch.setattr(certs, "lan_addresses", lambda: ["10.20.30.40"])
    cert_path, _ = certs.ensure_self_signed(tmp_path)
    sans = x509.load_pem_x509_certificate(cert_path.read_bytes()).extensions
    ips = {
        str(ip)
        for ip in sans.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
    }
    assert "10.20.30.40" in ips
    before = cert_path.read_bytes()
    monkeypatch.setattr(certs, "lan_addresses", lambda: ["10.99.0.1"])  # the laptop moved to another network
    assert certs.ensure_self_signed(tmp_path)[0].read_bytes() != before


# ---- resume store ------------------------------------------------------------------------------
def test_resume_store_keeps_a_lost_call_for_the_window():
    from speakdraw.pipeline import Pipeline
    from speakdraw.settings import Settings

    session = SimpleNamespace(id="abc", pipeline=Pipeline(Settings(prompt="a lighthouse", seed=7)), audio=None)
    store = resume.ResumeStore(window_s=60)
    store.remember(session)
    assert len(store) == 1
    lost = store.take("abc")
    assert lost is not None and lost.settings["seed"] == 7 and store.take("abc") is None  # taken once
    store.remember(session)
    assert store.take("abc", now=time.monotonic() + 61) is None  # past the window: gone
    off = resume.ResumeStore(window_s=0)
    off.remember(session)
    assert len(off) == 0
