"""Memory that plateaus under call churn (issue 20): what a finished call held is freed at once and given
back to the OS.

What `bench/churn.py --profile/--native` found (1,000 calls, 4 at a time):
- Python allocations do not grow (tracemalloc: under 100 KB over 400 calls);
- a closed aiortc `RTCPeerConnection` is a reference cycle (about 1,400 objects per call, 1,000 of them
  the receive-side bitrate estimator's `RateBucket`s, plus cffi-backed DTLS/SRTP contexts), so it and
  the C memory it holds (codec contexts, frame buffers) are freed only by a full cyclic collection:
  between those, memory in use by C code climbed from 20 to 35 MB and fell back, again and again;
- glibc keeps what is freed in its arenas (68-110 MB "freed but kept"), so RSS only ever grew.

So: once the models are loaded and no call is up, the heap so far is collected and frozen (`gc.freeze`:
the start-up objects are never scanned again, which also makes every automatic full collection cheap),
and soon after a call ends (at most once every `min_interval_s`, on a worker thread) a full collection
frees the finished calls' cycles and `malloc_trim(0)` returns the freed pages to the OS. And glibc gets
at most one arena per CPU (`limit_arenas`; its default is 8 per CPU): every thread a call starts (aiortc
decodes on a thread of its own per call) fragmented an arena of its own. With all three, RSS stayed
within 2 MB over 500 calls (600-call runs; without the arena limit it drifted 3-6 MB per 500 calls).
Not done: a fixed `M_MMAP_THRESHOLD` flattens RSS as well, but makes every frame-sized buffer a fresh
mmap (measured: 15 µs → 420 µs per 786 KB copy). Where the C library is not glibc, the glibc parts are
skipped (the collection still runs).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 2.0


M_ARENA_MAX = -8  # mallopt parameter (malloc.h)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def limit_arenas(count: int | None = None) -> bool:
    """At most `count` glibc arenas (default: the CPUs); call before the server's threads start. True if set."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, max(1, count or os.cpu_count() or 1)))


def _glibc_trim() -> Callable[[], int] | None:
    """glibc's `malloc_trim(0)`, or None on another C library."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class MemoryReleaser:
    def __init__(self, executor: Executor, min_interval_s: float = MIN_INTERVAL_S) -> None:
        self.executor = executor
        self.min_interval_s = min_interval_s
        self.trim = _glibc_trim()
        self.releases = 0  # collections + trims run after calls ended
        self.frozen = 0  # objects moved to the permanent generation at start-up
        self.last_ms: dict[str, float] = {}  # the newest release: "collect", "trim"
        self._due: asyncio.TimerHandle | None = None
        self._last = float("-inf")
        self._freeze_wanted = False

    def summary(self) -> dict[str, Any]:
        return {
            "releases": self.releases,
            "frozen": self.frozen,
            "trim": self.trim is not None,
            "last_ms": self.last_ms,
        }

    # ---- on the event loop ------------------------------------------------------------------------------
    def models_loaded(self, calls: int) -> None:
        """Freeze the start-up heap now, or once no call is up (a call's objects must stay collectable)."""
        self._freeze_wanted = True
        if calls == 0:
            self._submit(self._freeze)

    def call_ended(self, calls: int) -> None:
        """A call ended (`calls` are still up): a release soon, coalesced with one already due."""
        if self._freeze_wanted and calls == 0:
            self._submit(self._freeze)
        if self._due is not None:
            return
        delay = max(0.0, self._last + self.min_interval_s - time.monotonic())
        self._due = asyncio.get_running_loop().call_later(delay, self._start)

    def _start(self) -> None:
        self._due = None
        self._last = time.monotonic()
        self._submit(self._release)

    def _submit(self, work: Callable[[], None]) -> None:
        try:
            self.executor.submit(work)
        except RuntimeError:  # the pool is shut down: the process is stopping
            pass

    def close(self) -> None:
        """The app stops: a frozen heap is thawed, so an app made and closed in-process (a test, a notebook)
        leaves the interpreter's collector as it found it."""
        if self._due is not None:
            self._due.cancel()
            self._due = None
        self._freeze_wanted = False
        if self.frozen:
            gc.unfreeze()
            self.frozen = 0

    # ---- on the worker thread -----------------------------------------------------------------------------
    def _freeze(self) -> None:
        if not self._freeze_wanted:
            return
        self._freeze_wanted = False
        start = time.perf_counter()
        gc.collect()
        gc.freeze()
        self.frozen = gc.get_freeze_count()
        log.info("froze %d start-up objects in %.0f ms", self.frozen, (time.perf_counter() - start) * 1000.0)

    def _release(self) -> None:
        start, cpu = time.perf_counter(), time.thread_time()
        gc.collect()
        collected, collected_cpu = time.perf_counter(), time.thread_time()
        if self.trim is not None:
            self.trim()
        done = time.perf_counter()
        self.releases += 1
        self.last_ms = {
            "collect": round((collected - start) * 1000.0, 2),  # wall time (the GIL is held for collect_cpu)
            "collect_cpu": round((collected_cpu - cpu) * 1000.0, 2),
            "trim": round((done - collected) * 1000.0, 2),  # the GIL is released meanwhile
        }
        log.debug("memory released after calls ended: %s", self.last_ms)
