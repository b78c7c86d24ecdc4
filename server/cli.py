"""`speakdraw serve` and `speakdraw models` — the command line of DESIGN.md."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
import threading
import time
from pathlib import Path

from server.auth import new_token
from server.config import ServerConfig, is_loopback
from server.netcli import add_network_args, apply_network_args

log = logging.getLogger("speakdraw")
# After the app has shut down, worker threads still inside a model step (or a model load) get this long.
SHUTDOWN_GRACE_S = 2.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speakdraw", description="Real-time speak & draw video server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1", help="plain-HTTP listener address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="plain-HTTP listener port (default 8080)")
    serve.add_argument("--https-port", type=int, default=8443, help="HTTPS on all interfaces (0 = off)")
    serve.add_argument("--cert", type=Path, help="TLS certificate (PEM); default: self-signed in certs/")
    serve.add_argument("--key", type=Path, help="TLS private key (PEM)")
    serve.add_argument("--token", help="access token for /api/* (generated when listening beyond loopback)")
    serve.add_argument("--engine", default="sd-turbo", choices=["sd-turbo", "tiny", "passthrough"])
    serve.add_argument("--model", default="stabilityai/sd-turbo", help="hub id or local folder")
    serve.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    serve.add_argument("--acceleration", default="none", choices=["none", "xformers", "compile", "tensorrt"])
    serve.add_argument(
        "--compile-mode",
        default=None,
        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
        help="torch.compile mode with --acceleration compile (reduce-overhead = CUDA graphs: fastest on one GPU call)",
    )
    serve.add_argument("--no-taesd", action="store_true", help="decode with the full VAE instead of TAESD")
    serve.add_argument(
        "--lcm-lora",
        nargs="?",
        const="latent-consistency/lcm-lora-sdv1-5",
        default=None,
        metavar="ID_OR_PATH",
        help="fuse an LCM-LoRA into an SD 1.5-family model (default id: latent-consistency/lcm-lora-sdv1-5)",
    )
    serve.add_argument("--no-ip-adapter", action="store_true", help="do not load IP-Adapter (image prompts)")
    serve.add_argument("--stt", default="faster-whisper", choices=["faster-whisper", "openai-whisper", "off"])
    serve.add_argument("--stt-model", default="tiny.en", help="Whisper model name or path")
    serve.add_argument("--matting", default="rvm", choices=["rvm", "off"])
    serve.add_argument("--ice-server", action="append", default=[], metavar="URL", help="STUN/TURN URL (repeat)")
    serve.add_argument("--max-sessions", type=int, default=8)
    serve.add_argument("--simulate-model-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    serve.add_argument("--log-level", default="info")
    add_network_args(serve)  # --turn-url --turn-secret --ice-transport-policy --resume-window --video-codec ...
    models = sub.add_parser("models", help="list, pull or locate weights", add_help=False)
    models.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    config = ServerConfig(
        host=args.host,
        port=args.port,
        https_port=args.https_port,
        cert=args.cert,
        key=args.key,
        token=args.token,
        token_explicit=args.token is not None,
        engine=args.engine,
        model=args.model,
        device=args.device,
        acceleration=args.acceleration,
        use_taesd=not args.no_taesd,
        lcm_lora=args.lcm_lora,
        compile_mode=None if args.compile_mode in (None, "default") else args.compile_mode,
        ip_adapter=not args.no_ip_adapter,
        stt=args.stt,
        stt_model=args.stt_model,
        matting=args.matting,
        ice_servers=list(args.ice_server),
        simulate_model_ms=args.simulate_model_ms,
        max_sessions=args.max_sessions,
    )
    apply_network_args(build_parser(), args, config)
    beyond_loopback = config.https_port or not is_loopback(config.host)
    if beyond_loopback and not config.token:
        config.token = new_token()
    return config


async def serve(config: ServerConfig) -> None:
    from aiohttp import web

    from server.app import STATE, create_app
    from server.banner import banner
    from server.certs import ensure_self_signed
    from server.keys import LOAD_TASK

    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    sites = [web.TCPSite(runner, config.host, config.port)]
    if config.https_port:
        cert, key = (config.cert, config.key) if config.cert and config.key else ensure_self_signed(config.certs_dir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        sites.append(web.TCPSite(runner, config.https_host, config.https_port, ssl_context=context))
    for site in sites:
        await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([app[LOAD_TASK], stopping], return_when=asyncio.FIRST_COMPLETED)
    if not stop.is_set():
        state = app[STATE]
        print(banner(config, state.engine_name(), state.warnings), flush=True)
    await stopping
    log.info("shutting down")
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["models"]:
        from speakdraw.weights_cli import main as models_main

        return models_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(config_from_args(args)))
    _exit_if_workers_hang()
    return 0


def _exit_if_workers_hang() -> None:
    """Python joins worker threads at exit; one inside a long CPU diffusion step or a weight download would hold
    the process for its duration. Give them a short grace, then exit anyway: peers and sockets are closed."""
    deadline = time.monotonic() + SHUTDOWN_GRACE_S
    others = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    busy = [t.name for t in others if t.is_alive()]
    if busy:
        log.warning("exiting without waiting for busy worker threads: %s", ", ".join(busy))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
