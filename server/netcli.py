"""The command-line flags of "phones on real networks" (TURN, ICE policy, resume, codec, bitrate, media ports)."""

from __future__ import annotations

import argparse

from server.config import ServerConfig
from server.ice import IceConfigError, from_config
from server.media_ports import parse_ports


def add_network_args(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("phones on real networks")
    group.add_argument("--turn-url", action="append", default=[], metavar="URL", help="TURN URL (repeat)")
    group.add_argument("--turn-secret", help="coturn's static-auth-secret: /api/ice mints time-limited credentials")
    group.add_argument(
        "--ice-transport-policy", default="all", choices=["all", "relay"], help="relay: TURN candidates only"
    )
    group.add_argument("--resume-window", type=float, default=60.0, metavar="SECONDS", help="keep a lost call")
    group.add_argument("--video-codec", default="auto", choices=["auto", "vp8", "h264"])
    group.add_argument("--max-bitrate", type=int, default=None, metavar="BPS", help="cap of the returned video")
    group.add_argument("--media-ports", default=None, metavar="LO-HI", help="UDP ports for media, e.g. 50000-50100")


def apply_network_args(parser: argparse.ArgumentParser, args: argparse.Namespace, config: ServerConfig) -> None:
    """Copy the flags into `config`; a malformed value stops the CLI with a clear message."""
    config.turn_urls = list(args.turn_url)
    config.turn_secret = args.turn_secret
    config.ice_transport_policy = args.ice_transport_policy
    config.resume_window_s = args.resume_window
    config.video_codec = args.video_codec
    config.max_bitrate = args.max_bitrate
    if args.resume_window < 0:
        parser.error("--resume-window must be >= 0")
    if args.max_bitrate is not None and args.max_bitrate < 10_000:
        parser.error("--max-bitrate is in bits per second and at least 10000")
    try:
        config.media_ports = parse_ports(args.media_ports) if args.media_ports else []
        from_config(config)
    except (ValueError, IceConfigError) as exc:
        parser.error(str(exc))
