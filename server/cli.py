"""`speakdraw serve`, `speakdraw cluster` (server/cluster/) and `speakdraw models`: the command line README.md
describes (Command line)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import threading
import time
from pathlib import Path

from server.auth import new_token
from server.config import ServerConfig, is_loopback
from server.netcli import add_network_args, apply_network_args
from speakdraw.engines import ENGINE_NAMES

log = logging.getLogger("speakdraw")
# After the app has shut down, worker threads still inside a model step (or a model load) get this long.
SHUTDOWN_GRACE_S = 2.0
SHUTDOWN_DEADLINE_S = 30.0  # from the stop signal to the process's end, whatever hangs in between


def build_parser() -> argparse.ArgumentParser:
    from server.cluster.cli import add_cluster_parser  # no Ray imported here: only `cluster` needs the extra

    parser = argparse.ArgumentParser(prog="speakdraw", description="Real-time speak & draw video server")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_args(sub.add_parser("serve", help="run the server"))
    add_cluster_parser(sub, add_serve_args)  # the front door and its workers take every serve flag
    models = sub.add_parser("models", help="list, pull or locate weights", add_help=False)
    models.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def add_serve_args(serve: argparse.ArgumentParser) -> None:
    """The flags of `speakdraw serve`; `speakdraw cluster` takes them too and passes the media ones to its workers."""
    serve.add_argument("--host", default="127.0.0.1", help="plain-HTTP listener address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="plain-HTTP listener port (default 8080)")
    serve.add_argument("--https-port", type=int, default=8443, help="HTTPS on all interfaces (0 = off)")
    serve.add_argument("--cert", type=Path, help="TLS certificate (PEM); default: self-signed in certs/")
    serve.add_argument("--key", type=Path, help="TLS private key (PEM)")
    serve.add_argument("--token", help="access token for /api/* (generated when listening beyond loopback)")
    serve.add_argument("--engine", default="sd-turbo", choices=list(ENGINE_NAMES))
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
    serve.add_argument(
        "--stt-model",
        default="auto",
        help="Whisper model: auto (by device and measured speed), tiny.en, base.en, base, small.en, ... or a path",
    )
    serve.add_argument(
        "--stt-vocabulary", metavar="FILE", default=None, help="more words to bias speech towards (one a line)"
    )
    serve.add_argument("--no-stt-vocabulary", action="store_true", help="no vocabulary biasing (plain Whisper decodes)")
    serve.add_argument("--matting", default="rvm", choices=["rvm", "off"])
    serve.add_argument("--ice-server", action="append", default=[], metavar="URL", help="STUN/TURN URL (repeat)")
    serve.add_argument("--max-sessions", type=int, default=8)
    serve.add_argument(
        "--min-fps",
        type=float,
        default=8.0,
        help="frames per second each call should keep: below it the working size steps down (--degradation); "
        "a call that would push the calls below it even at the smallest size is refused (default 8)",
    )
    serve.add_argument(
        "--degradation",
        default="balanced",
        choices=["balanced", "maintain-framerate", "maintain-resolution"],
        help="what gives when the device cannot keep --min-fps at the requested size: the size steps down "
        "(balanced: to keep --min-fps; maintain-framerate: to keep 30 fps) or the frame rate falls "
        "(maintain-resolution); default balanced",
    )
    serve.add_argument(
        "--connect-timeout", type=float, default=20.0, help="close a call not connected after this many seconds"
    )
    serve.add_argument(
        "--cpu-cores",
        type=int,
        default=0,
        help="cores the capacity model may budget (default: all this process may use)",
    )
    serve.add_argument("--simulate-model-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    serve.add_argument("--log-level", default="info")
    add_network_args(serve)  # --turn-url --turn-secret --ice-transport-policy --resume-window --video-codec ...
    worker = serve.add_argument_group("as a cluster worker (set by speakdraw cluster)")
    worker.add_argument("--worker-id", type=_worker_id, default="", help="prefix of this worker's session ids")
    worker.add_argument(
        "--drain-timeout", type=float, default=600.0, metavar="S", help="with --worker-id: SIGTERM drains this long"
    )


def _worker_id(text: str) -> str:
    if text and (not text.replace("_", "").isalnum() or not text.isascii()):
        raise argparse.ArgumentTypeError("a worker id is letters, digits and _ (it prefixes URL-safe session ids)")
    return text


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Flags named like a `ServerConfig` field are copied as they are; the others are translated here."""
    translated = {
        "token_explicit": args.token is not None,
        "use_taesd": not args.no_taesd,
        "compile_mode": None if args.compile_mode in (None, "default") else args.compile_mode,
        "ip_adapter": not args.no_ip_adapter,
        "ice_servers": list(args.ice_server),
        "connect_timeout_s": args.connect_timeout,
        "drain_timeout_s": args.drain_timeout,
        "stt_bias": not args.no_stt_vocabulary,
    }
    if args.stt_vocabulary and not os.access(args.stt_vocabulary, os.R_OK):
        build_parser().error(f"--stt-vocabulary {args.stt_vocabulary}: cannot read it")
    fields = {f.name for f in dataclasses.fields(ServerConfig)} - set(translated)
    config = ServerConfig(**{name: value for name, value in vars(args).items() if name in fields}, **translated)
    apply_network_args(build_parser(), args, config)
    beyond_loopback = config.https_port or not is_loopback(config.host)
    if beyond_loopback and not config.token:
        config.token = new_token()
    return config


async def serve(config: ServerConfig) -> list[str]:
    """Run until SIGINT/SIGTERM; returns the names of worker threads still busy after their grace."""
    from server.app import create_app
    from server.banner import banner, models_line
    from server.listeners import start_listeners, stop_event_on_signals
    from server.state import LOAD_TASK, STATE

    app = create_app(config)
    runner = await start_listeners(
        app,
        host=config.host,
        port=config.port,
        https_host=config.https_host,
        https_port=config.https_port,
        cert=config.cert,
        key=config.key,
        certs_dir=config.certs_dir,
    )
    loop = asyncio.get_running_loop()
    stop = stop_event_on_signals(loop)
    stopping = asyncio.ensure_future(stop.wait())
    state = app[STATE]
    # The listeners are up: say where to go now; the models follow (minutes on a first run).
    if config.worker_id:  # a cluster worker: SIGTERM drains first, SIGUSR1/2 drain/undrain, dies with its actor
        from server.cluster import worker_side

        print(worker_side.install(loop, state, stop), flush=True)  # one line, no token: callers use the front door
    else:
        print(banner(config, f"{config.engine} (loading; calls get passthrough until it is ready)", []), flush=True)
    await asyncio.wait([app[LOAD_TASK], stopping], return_when=asyncio.FIRST_COMPLETED)
    if not stop.is_set():
        print(models_line(state.engine_name(), state.warnings), flush=True)
    await stopping
    log.info("shutting down")
    _exit_after(SHUTDOWN_DEADLINE_S)
    await runner.cleanup()
    alive = state.workers.wait_stopped(SHUTDOWN_GRACE_S)
    log.info("speakdraw threads alive after shutdown: %s", alive)
    return alive


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["models"]:
        from speakdraw.weights.cli import main as models_main

        return models_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "cluster":
        from server.cluster.cli import main as cluster_main

        return cluster_main(args, add_serve_args, config_from_args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from server.access_log import MalformedRequestFilter, RedactingFilter

    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())
    from server.aiortc_patches import PatchRefused

    try:
        busy = asyncio.run(serve(config_from_args(args)))
    except PatchRefused as exc:  # a flag needs a change to aiortc/aioice that does not fit this install
        print(f"speakdraw serve: {exc}", file=sys.stderr)
        return 2
    _exit_if_workers_hang(0.0 if busy else SHUTDOWN_GRACE_S)  # busy ones already had their grace
    return 0


def _exit_after(deadline_s: float) -> None:
    """A stopped server ends, even if closing a peer or a listener hangs: its listener may already be gone, and a
    cluster worker's Ray actor restarts it only once the process has exited (server/cluster/actor.py)."""

    def hard_exit() -> None:
        log.error("shutdown took longer than %.0f s: exiting now", deadline_s)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(deadline_s, hard_exit)
    timer.daemon = True
    timer.start()


def _exit_if_workers_hang(grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Python joins worker threads at exit; one inside a long CPU diffusion step or a weight download would hold
    the process for its duration. Give them a short grace, then exit anyway: peers and sockets are closed."""
    deadline = time.monotonic() + grace_s
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
