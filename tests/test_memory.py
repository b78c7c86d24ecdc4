"""server/memory.py: a release after calls end frees their reference cycles (what a closed aiortc peer connection
is), releases coalesce, and the start-up heap is frozen only once no call is up."""

from __future__ import annotations

import asyncio
import gc
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest

from server import memory


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None
        self.payload = bytearray(1 << 20)


def cycle() -> weakref.ref:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def no_automatic_gc():
    gc.disable()
    yield
    gc.enable()


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_a_release_frees_the_cycles_a_finished_call_left(no_automatic_gc):
    with ThreadPoolExecutor(1) as pool:
        releaser = memory.MemoryReleaser(pool, min_interval_s=0.0)
        left = cycle()
        await asyncio.sleep(0.05)
        assert left() is not None  # reference counting alone never frees a cycle
        releaser.call_ended(calls=0)
        await _until(lambda: releaser.releases == 1)
        assert left() is None
        assert set(releaser.last_ms) == {"collect", "collect_cpu", "trim"}


async def test_releases_coalesce_within_the_interval():
    with ThreadPoolExecutor(1) as pool:
        releaser = memory.MemoryReleaser(pool, min_interval_s=0.3)
        for _ in range(20):  # twenty calls end at once: one release now ...
            releaser.call_ended(calls=3)
        await _until(lambda: releaser.releases == 1)
        releaser.call_ended(calls=2)  # ... and one more after the interval, not twenty
        await asyncio.sleep(0.1)
        assert releaser.releases == 1
        await _until(lambda: releaser.releases == 2)
        await asyncio.sleep(0.4)
        assert releaser.releases == 2
        releaser.close()


async def test_the_start_up_heap_is_frozen_once_no_call_is_up():
    gc.unfreeze()  # whatever an earlier test in this process froze
    with ThreadPoolExecutor(1) as pool:
        releaser = memory.MemoryReleaser(pool, min_interval_s=10.0)
        try:
            releaser.models_loaded(calls=1)  # a call joined while the models loaded: its objects must stay collectable
            await asyncio.sleep(0.1)
            assert releaser.frozen == 0 and gc.get_freeze_count() == 0
            releaser.call_ended(calls=0)
            await _until(lambda: releaser.frozen > 0)
            assert gc.get_freeze_count() > 0
            releaser.close()
            assert gc.get_freeze_count() == 0  # closing the app thaws it again
        finally:
            releaser.close()
            gc.unfreeze()


def test_glibc_gets_one_arena_per_cpu():
    assert memory.limit_arenas() is True  # glibc here (Debian); elsewhere it says False and changes nothing
