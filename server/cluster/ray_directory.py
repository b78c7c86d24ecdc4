"""The workers as Ray named actors: made once, found by every front door, restarted by Ray.

Each worker is a detached actor named `speakdraw-<id>` in the namespace `speakdraw`, so a front door that
restarts, or a second one on the same cluster, finds the same workers (`get_if_exists`), and the workers
outlive any front door (on a cluster made with `ray start`; `--ray-address local` ends with its front door).
Ray places each by its resources (`num_gpus`, `num_cpus`) and restarts it (`max_restarts`) when it dies.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from server.cluster.actor import REPO_ROOT, WorkerProcess

log = logging.getLogger(__name__)

NAMESPACE = "speakdraw"
PREFIX = "speakdraw-"


@dataclass
class WorkerPlan:
    """What `speakdraw cluster` asks Ray for."""

    workers: int
    gpus_per_worker: float
    cpus_per_worker: float
    max_restarts: int
    serve_argv: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  # min_fps, max_sessions (room before anything is measured)


def actor_name(worker_id: str) -> str:
    return PREFIX + worker_id


class RayDirectory:
    """fleet.Directory over Ray; `ensure()` makes the workers that do not exist yet (blocking: call it off the loop)."""

    def __init__(self) -> None:
        self._handles: dict[str, Any] = {}
        self._pending: dict[str, Any] = {}  # worker id -> its info() call still in flight

    def ensure(self, plan: WorkerPlan, token: str | None) -> list[str]:
        import ray

        actor_class = ray.remote(WorkerProcess)
        ids = [f"w{i}" for i in range(plan.workers)]
        runtime_env = {}
        if (REPO_ROOT / "server" / "cli.py").exists():  # a source checkout: actors import this code
            runtime_env = {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}}
        for worker_id in ids:
            handle = actor_class.options(
                name=actor_name(worker_id),
                namespace=NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
                max_restarts=plan.max_restarts,
                max_task_retries=0,
                num_cpus=plan.cpus_per_worker,
                num_gpus=plan.gpus_per_worker,
                runtime_env=runtime_env or None,
            ).remote(worker_id, plan.serve_argv, token, plan.settings)
            self._handles[worker_id] = handle
        return ids

    def _list(self) -> list[str]:
        import ray

        names = ray.util.list_named_actors(all_namespaces=True)
        return sorted(
            n["name"][len(PREFIX) :] for n in names if n["namespace"] == NAMESPACE and n["name"].startswith(PREFIX)
        )

    def _handle(self, worker_id: str) -> Any:
        import ray

        handle = self._handles.get(worker_id)
        if handle is None:
            handle = self._handles[worker_id] = ray.get_actor(actor_name(worker_id), namespace=NAMESPACE)
        return handle

    async def names(self) -> list[str]:
        return await asyncio.get_running_loop().run_in_executor(None, self._list)

    async def info(self, worker_id: str, timeout_s: float) -> dict[str, Any]:
        """The actor's info(); a call still waiting (the actor restarting) is waited on again, not asked anew."""
        loop = asyncio.get_running_loop()
        ref = self._pending.get(worker_id)
        if ref is None:
            handle = await loop.run_in_executor(None, self._handle, worker_id)
            ref = self._pending[worker_id] = handle.info.remote()
        try:
            info = await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            raise
        except BaseException:
            self._pending.pop(worker_id, None)  # that call failed (the actor died under it): ask anew next time
            raise
        self._pending.pop(worker_id, None)
        return info

    def drain(self, worker_id: str, on: bool, timeout_s: float = 10.0) -> bool:
        import ray

        return bool(ray.get(self._handle(worker_id).drain.remote(on), timeout=timeout_s))

    def down(self, timeout_s: float = 20.0) -> list[str]:
        """Stop every worker for good (`speakdraw cluster down`)."""
        import ray

        ids = self._list()
        for worker_id in ids:
            handle = self._handle(worker_id)
            try:
                ray.get(handle.stop.remote(), timeout=timeout_s)
            except Exception as exc:  # already dead or restarting: the kill below ends it anyway
                log.warning("worker %s: stop failed: %r", worker_id, exc)
            ray.kill(handle, no_restart=True)
        return ids
