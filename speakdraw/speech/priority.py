"""CPU priority of the speech threads: video conversions and encodes must not starve speech.

On a 2-core machine the video path (decode, convert, encode at 30 fps) and Whisper share
the cores. Speech work is short and bursty (a ~0.1-0.4 s decode per utterance), video is
steady, so the speech threads run a little ahead of it: `SPEECH_NICE` (-5) for the speech
worker (Silero runs on it) and for CTranslate2's compute thread (created, and so niced,
when the model loads; nice is per thread on Linux and inherited by the threads a thread
starts). Lowering a nice value needs CAP_SYS_NICE (root, or a container that grants it);
without it this is a no-op and says so once in the log. Whisper's own thread count stays
at half the cores (`stt.default_cpu_threads`), so speech never takes every core.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)

SPEECH_NICE = -5
_warned = False


def set_thread_nice(nice: int) -> bool:
    """Set the calling thread's nice value (Linux: per thread). False when not allowed or not supported."""
    global _warned
    if not hasattr(os, "setpriority"):
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, _tid(), nice)
        return True
    except (PermissionError, OSError) as exc:
        if not _warned:
            _warned = True
            log.info("speech threads keep the default CPU priority (%s)", exc)
        return False


def _tid() -> int:
    import threading

    return threading.get_native_id()


@contextlib.contextmanager
def thread_nice(nice: int) -> Iterator[None]:
    """Run the block (and the threads it starts) at `nice`, then restore this thread's value."""
    before = os.getpriority(os.PRIO_PROCESS, _tid()) if hasattr(os, "getpriority") else 0
    changed = set_thread_nice(nice)
    try:
        yield
    finally:
        if changed:
            set_thread_nice(before)
