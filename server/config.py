"""Server configuration, filled by `speakdraw serve` (server/cli.py) or by tests."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WEB_DIR = REPO_ROOT / "web"
CERTS_DIR = REPO_ROOT / "certs"


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    https_port: int = 8443  # 0 = off; HTTPS listens on all interfaces
    https_host: str = "0.0.0.0"
    cert: Path | None = None
    key: Path | None = None
    certs_dir: Path = CERTS_DIR
    token: str | None = None
    token_explicit: bool = False  # given with --token: then every listener needs it
    engine: str = "sd-turbo"
    model: str = "stabilityai/sd-turbo"
    device: str = "auto"
    acceleration: str = "none"
    use_taesd: bool = True
    lcm_lora: str | None = None  # SD 1.5 family only
    compile_mode: str | None = None  # torch.compile mode with --acceleration compile
    ip_adapter: bool = True
    stt: str = "faster-whisper"
    stt_model: str = "auto"  # by device and measured speed (speakdraw/speech/model_choice.py)
    stt_vocabulary: str | None = None  # --stt-vocabulary FILE: more bias words
    stt_bias: bool = True  # --no-stt-vocabulary turns vocabulary biasing off
    matting: str = "rvm"
    ice_servers: list[str] = field(default_factory=list)
    simulate_model_ms: float = 0.0
    max_sessions: int = 8
    connect_timeout_s: float = 20.0  # a call that has not connected by then is closed (its slot freed)
    cpu_cores: int = 0  # cores the capacity model budgets (0 = all usable); less when callers share the machine
    min_fps: float = 8.0  # admission floor: a call that would push every call below it is refused
    max_offer_bytes: int = 256 * 1024
    max_upload_bytes: int = 10 * 1024 * 1024  # audio files for /api/transcribe
    max_image_bytes: int = 8 * 1024 * 1024  # image prompts
    max_transcribe_s: float = 600.0  # longest audio file /api/transcribe takes
    max_message_bytes: int = 64 * 1024
    # Phones on real networks (server/netcli.py fills these; see README "Phones on real networks")
    turn_urls: list[str] = field(default_factory=list)  # --turn-url, with credentials minted from turn_secret
    turn_secret: str | None = None  # coturn's static-auth-secret (TURN REST scheme)
    turn_ttl_s: int = 24 * 3600  # lifetime of minted TURN credentials
    ice_transport_policy: str = "all"  # "relay": the server and the page use TURN candidates only
    resume_window_s: float = 60.0  # a lost call's state is kept this long for a `resume` offer
    video_codec: str = "auto"  # auto (the cheapest encoder measured here: VP8 in software) | vp8 | h264
    degradation: str = "balanced"  # balanced | maintain-framerate | maintain-resolution (server/capacity.py)
    max_bitrate: int | None = None  # bits/s cap of the returned video track
    media_ports: list[int] = field(default_factory=list)  # UDP ports for ICE host candidates; [] = any
    # A cluster worker (`speakdraw cluster` starts it; see README "More than one machine")
    worker_id: str = ""  # names the worker in its session ids ("<worker_id>-<hex>"): the front door routes by it
    drain_timeout_s: float = 600.0  # SIGTERM on a worker: no new calls, exit when its calls end or after this

    def token_required_on(self, listener_host: str) -> bool:
        """A token is needed on every listener beyond loopback, and everywhere when given explicitly."""
        if not self.token:
            return False
        return self.token_explicit or not is_loopback(listener_host)
