"""`speakdraw cluster`: a front door and its workers on Ray; `speakdraw cluster drain WORKER`; `... down`.

The `cluster` parser takes every `speakdraw serve` flag (server/cli.py hands over its `add_serve_args`).
The listener flags (`--host --port --https-port --cert --key --token`) are the front door's; every other
one is given, as the user wrote it, to each worker's `speakdraw serve` (`worker_argv`), so a flag that
`serve` gains passes through with no change here. Ray is imported only when the command runs: without the
`cluster` extra it says how to install it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from collections.abc import Callable
from typing import Any

INSTALL_HINT = 'speakdraw cluster needs Ray: pip install -e ".[cluster]"  (or: pip install "ray>=2.30,<3")'
# serve flags that belong to the front door's listeners, or that each worker gets its own of
FRONT_DOOR_DESTS = {"host", "port", "https_port", "cert", "key", "token", "worker_id", "help"}
CLUSTER_DESTS = {"ray_address", "workers", "gpus_per_worker", "cpus_per_worker", "max_restarts", "ray_temp_dir"}

log = logging.getLogger("speakdraw.cluster")


def add_cluster_parser(sub: Any, add_serve_args: Callable[[argparse.ArgumentParser], None]) -> None:
    cluster = sub.add_parser(
        "cluster",
        help="one URL in front of many GPU workers, on Ray (the cluster extra)",
        description="A front door plus workers, each a whole speakdraw serve, placed and restarted by Ray. "
        "Every serve flag is taken: --host/--port/--https-port/--cert/--key/--token are the front door's, "
        "the others go to every worker.",
    )
    group = cluster.add_argument_group("cluster")
    group.add_argument(
        "--ray-address",
        default="local",
        help="local (default: start Ray here), auto (the cluster of `ray start` on this machine), "
        "HOST:PORT or ray://HOST:PORT",
    )
    group.add_argument("--workers", type=int, default=None, help="workers to run (default: one per GPU, else 1)")
    group.add_argument(
        "--gpus-per-worker", type=float, default=None, help="GPUs each worker takes (default 1 where there are GPUs)"
    )
    group.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs Ray reserves for each worker")
    group.add_argument("--max-restarts", type=int, default=-1, help="restarts Ray makes of a dead worker (-1: always)")
    group.add_argument("--ray-temp-dir", default=None, help=argparse.SUPPRESS)  # tests: a Ray of their own
    add_serve_args(cluster)
    actions = cluster.add_subparsers(dest="cluster_action", metavar="{drain,down}")
    drain = actions.add_parser("drain", help="stop new calls to a worker (its calls go on); --undo takes them again")
    drain.add_argument("worker", help="the worker id (w0, w1...: /healthz lists them)")
    drain.add_argument("--undo", action="store_true", help="take new calls again")
    drain.add_argument("--ray-address", default="auto", help="the cluster (default: auto)")
    down = actions.add_parser("down", help="stop every worker of the cluster for good")
    down.add_argument("--ray-address", default="auto", help="the cluster (default: auto)")


def worker_argv(args: argparse.Namespace, add_serve_args: Callable[[argparse.ArgumentParser], None]) -> list[str]:
    """The serve flags the user gave (those that differ from serve's defaults), less the front door's, as argv."""
    parser = argparse.ArgumentParser(add_help=False)
    add_serve_args(parser)
    argv: list[str] = []
    for action in parser._actions:
        if action.dest in FRONT_DOOR_DESTS or not action.option_strings or not hasattr(args, action.dest):
            continue
        value, flag = getattr(args, action.dest), action.option_strings[-1]
        if value == action.default:
            continue
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            argv += [f"{flag}={item}" for item in value[len(action.default or []) :]]
        else:
            argv.append(f"{flag}={value}")
    return argv


def main(args: argparse.Namespace, add_serve_args: Callable, worker_config: Callable) -> int:
    if args.cluster_action or args.ray_address != "local":
        _send_ray_token()  # before Ray is imported: it reads RAY_AUTH_MODE once
    try:
        import ray  # noqa: F401
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.cluster_action == "drain":
        return _drain(args)
    if args.cluster_action == "down":
        return _down(args)
    worker_config(args)  # the workers' flags are checked here, once, not by a restart loop on every node
    return _run(args, worker_argv(args, add_serve_args))


def _send_ray_token() -> None:
    """Ray 2.5x gives the cluster `ray.init()` starts a token (~/.ray/auth_token), which a driver that joins must
    send: it does only with RAY_AUTH_MODE=token. Set it when a token is at hand and the user chose no mode."""
    from pathlib import Path

    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or token_file.exists()):
        os.environ["RAY_AUTH_MODE"] = "token"


def _connect(address: str) -> None:
    import ray

    from server.cluster.ray_directory import NAMESPACE

    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False)


def _drain(args: argparse.Namespace) -> int:
    from server.cluster.ray_directory import RayDirectory

    _connect(args.ray_address)
    try:
        ok = RayDirectory().drain(args.worker, on=not args.undo)
    except ValueError:
        print(f"no worker {args.worker!r} in this cluster", file=sys.stderr)
        return 1
    print(f"worker {args.worker}: {'taking calls again' if args.undo else 'draining'}" if ok else "not running")
    return 0 if ok else 1


def _down(args: argparse.Namespace) -> int:
    from server.cluster.ray_directory import RayDirectory

    _connect(args.ray_address)
    ids = RayDirectory().down()
    print(f"stopped {len(ids)} workers: {', '.join(ids) or '-'}")
    return 0


def _start_ray(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from server.cluster.ray_directory import NAMESPACE

    if args.ray_address == "local":
        workers = args.workers or 1
        cpus = max(1, int(-(-workers * args.cpus_per_worker // 1))) if args.workers else None
        context = ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            namespace=NAMESPACE,
            object_store_memory=128 * 1024 * 1024,  # the workers pass no objects: keep shared memory small
            _temp_dir=args.ray_temp_dir,
            log_to_driver=True,
            configure_logging=False,
        )
    else:
        context = ray.init(address=args.ray_address, namespace=NAMESPACE, log_to_driver=True, configure_logging=False)
    info = getattr(context, "address_info", None) or {}  # Ray Client (ray://) contexts have none
    return {"address": info.get("gcs_address") or args.ray_address, "namespace": NAMESPACE, "mode": args.ray_address}


def _plan(args: argparse.Namespace, serve_argv: list[str]):
    import ray

    from server.cluster.ray_directory import WorkerPlan

    gpus = float(ray.cluster_resources().get("GPU", 0))
    gpus_per_worker = args.gpus_per_worker if args.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    workers = args.workers if args.workers is not None else (int(gpus // gpus_per_worker) if gpus_per_worker else 1)
    return WorkerPlan(
        workers=max(0, workers),
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        max_restarts=args.max_restarts,
        serve_argv=serve_argv,
        # local: the workers' HTTP on loopback (only the front door talks to it); else on the node's address
        settings={
            "min_fps": args.min_fps,
            "max_sessions": args.max_sessions,
            "host": "127.0.0.1" if args.ray_address == "local" else None,
        },
    )


def _run(args: argparse.Namespace, serve_argv: list[str]) -> int:
    import ray

    from server.auth import new_token
    from server.cluster.ray_directory import RayDirectory
    from server.config import is_loopback

    ray_info = _start_ray(args)
    try:
        plan = _plan(args, serve_argv)
        directory = RayDirectory()
        # Workers on a node's address need a token (only the front doors get it, over Ray); with `local` they
        # listen on loopback like a plain `speakdraw serve`, and need one only when --token was given.
        local_open = args.ray_address == "local" and args.token is None
        ids = directory.ensure(plan, token=None if local_open else secrets.token_urlsafe(16))
        log.info(
            "workers %s (%g GPU, %g CPU each) with: serve %s",
            ", ".join(ids) or "-",
            plan.gpus_per_worker,
            plan.cpus_per_worker,
            " ".join(serve_argv),
        )
        token = args.token
        beyond_loopback = args.https_port or not is_loopback(args.host)
        if beyond_loopback and not token:
            token = new_token()
        asyncio.run(_serve_front_door(args, directory, token, ray_info))
    finally:
        ray.shutdown()  # with --ray-address local this ends the workers too; a cluster's workers stay
    return 0


async def _serve_front_door(args: argparse.Namespace, directory: Any, token: str | None, ray_info: dict) -> None:
    from server.banner import banner
    from server.cluster.fleet import Fleet
    from server.cluster.front_door import FrontDoorConfig, create_front_door
    from server.config import CERTS_DIR, ServerConfig
    from server.listeners import start_listeners, stop_event_on_signals

    def changed(view, old: str) -> None:
        if view.state == "alive":
            info = view.info or {}
            print(
                f"  worker {view.id}: alive on {info.get('node')} (pid {(view.health or {}).get('pid')}), "
                f"engine {(view.health or {}).get('engine')}",
                flush=True,
            )
        elif view.state in ("dead", "draining"):
            print(f"  worker {view.id}: {view.state}", flush=True)

    config = FrontDoorConfig(
        host=args.host,
        port=args.port,
        https_port=args.https_port,
        token=token,
        token_explicit=args.token is not None,
        ray=ray_info,
    )
    app = create_front_door(Fleet(directory, on_change=changed), config)
    runner = await start_listeners(
        app,
        host=args.host,
        port=args.port,
        https_host=config.https_host,
        https_port=args.https_port,
        cert=args.cert,
        key=args.key,
        certs_dir=CERTS_DIR,
    )
    stop = stop_event_on_signals(asyncio.get_running_loop())
    shown = ServerConfig(
        host=args.host, port=args.port, https_port=args.https_port, token=token, token_explicit=args.token is not None
    )
    print(banner(shown, f"{args.engine} on Ray workers (ray {ray_info['mode']}: {ray_info['address']})", []))
    print("  workers (as they come up):", flush=True)
    await stop.wait()
    log.info("front door shutting down")
    await runner.cleanup()
