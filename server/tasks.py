"""Owned asyncio tasks: every task the server starts belongs to a `TaskSet` (a session's or the app's).

asyncio keeps only a weak reference to a running task, so a task nobody holds can be collected
mid-flight, and a teardown cannot wait for what it cannot see. A `TaskSet` holds each task until it
is done, logs a task that fails (instead of "Task exception was never retrieved" at exit), and
`close()` cancels what is left and awaits it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSet:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: task %s failed", self.owner, task.get_name(), exc_info=task.exception())

    async def wait(self, timeout: float | None = None) -> None:
        """Let the tasks finish by themselves (up to `timeout`), the current task excepted."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def close(self) -> None:
        """Cancel every task (the current one excepted) and await them all."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
