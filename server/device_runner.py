"""The device runner: one thread per device runs all its work; each step is every call's newest frame, batched.

Not to be confused with a diffusion *scheduler* (diffusers' LCM/Euler noise schedule inside an engine).

Each call registers a `CallSlot`: a one-slot, thread-safe inbox (a newer frame replaces one not
yet taken, counted as dropped). The runner's own thread waits until some slot holds a frame,
takes the newest frame of *every* call that has one, converts them to RGB, runs them as one
step (`speakdraw.pipeline.process_frames`: mattes and engine frames batched, each call's state
its own), converts back and hands each result to its call on the event loop. Calls therefore
share the device fairly (one frame each per step), nothing queues behind the device, and no
model code ever runs on the event loop.

Other work for the device (image-prompt encodes, warm-up, closing an engine session) goes
through `call(fn)`: it runs on the same thread between steps, so torch's per-thread state
(CUDA graphs of `reduce-overhead`) is recorded and replayed on one thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

import numpy as np
from av import VideoFrame

from server.capacity import CapacityModel
from speakdraw.pipeline import Pipeline, process_frames

log = logging.getLogger(__name__)


@dataclass
class Processed:
    """A call's transformed frame (or its error), as delivered on the event loop."""

    frame: VideoFrame | None
    error: BaseException | None
    arrived: float  # time.monotonic() when the camera frame was taken off the track
    started: float  # when the step that processed it began
    done: float
    timings_ms: dict[str, float]
    batch: int  # how many calls' frames shared the step
    rgb: np.ndarray | None = None  # the frame's pixels (not to be written): for readers other than its sender


class CallSlot:
    """A call's place at the runner: its newest waiting frame and where results go."""

    def __init__(
        self,
        runner: DeviceRunner,
        pipeline: Pipeline,
        deliver: Callable[[Processed], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.runner = runner
        self.pipeline = pipeline
        self._deliver = deliver
        self._loop = loop
        self._frame: tuple[VideoFrame, float] | None = None
        self.dropped = 0
        self.closed = False

    def put(self, frame: VideoFrame, arrived: float) -> bool:
        """Offer the newest camera frame (event loop). Returns whether it replaced an untaken one."""
        with self.runner._cond:
            replaced = self._frame is not None
            if replaced:
                self.dropped += 1
            self._frame = (frame, arrived)
            self.runner._cond.notify()
        return replaced

    def _take(self) -> tuple[VideoFrame, float] | None:
        item, self._frame = self._frame, None
        return item

    def deliver(self, result: Processed) -> None:
        """From the runner thread: hop onto the call's loop."""
        if self.closed or self._loop.is_closed():
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver_on_loop, result)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _deliver_on_loop(self, result: Processed) -> None:
        if not self.closed:
            self._deliver(result)

    def close(self) -> None:
        """Leave the runner; a step in flight may still finish, its result is dropped."""
        self.runner.unregister(self)


def to_rgb(frame: VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def to_frame(rgb: np.ndarray, source: VideoFrame) -> VideoFrame:
    out = VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    out.pts, out.time_base = source.pts, source.time_base
    return out


class DeviceRunner:
    """The device's one frame thread (named `speakdraw-video`); see the module docstring."""

    def __init__(
        self,
        matte_executor: Executor | None = None,
        capacity: CapacityModel | None = None,
        max_batch: int = 8,
        name: str = "speakdraw-video",
    ) -> None:
        self.matte_executor = matte_executor
        self.capacity = capacity or CapacityModel()
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._slots: list[CallSlot] = []
        self._calls: deque[tuple[Callable[[], Any], Future]] = deque()
        self._next = 0  # round-robin start when more calls wait than fit in one batch
        self._stopped = False
        self.steps = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=False)  # exit waits a grace for a step

    def _ensure_started(self) -> None:
        """The thread starts with the first call or job (an app that never takes a call starts none)."""
        if not self._thread.is_alive() and not self._stopped and self._thread.ident is None:
            self._thread.start()

    # ---- calls ---------------------------------------------------------------------------
    def register(self, pipeline: Pipeline, deliver: Callable[[Processed], None]) -> CallSlot:
        slot = CallSlot(self, pipeline, deliver, asyncio.get_running_loop())
        with self._cond:
            self._ensure_started()
            self._slots.append(slot)
        self.capacity.calls_changed(self.active_calls())
        return slot

    def unregister(self, slot: CallSlot) -> None:
        with self._cond:
            slot.closed = True
            slot._frame = None
            if slot in self._slots:
                self._slots.remove(slot)
        self.capacity.calls_changed(self.active_calls())

    def active_calls(self) -> int:
        with self._cond:
            return len(self._slots)

    # ---- other device work -----------------------------------------------------------------
    def call(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` on the runner's thread between steps; the Future has its result."""
        future: Future = Future()
        with self._cond:
            if self._stopped:
                future.set_exception(RuntimeError("the device runner is shut down"))
                return future
            self._ensure_started()
            self._calls.append((fn, future))
            self._cond.notify()
        return future

    async def run(self, fn: Callable[[], Any]) -> Any:
        """`call(fn)`, awaited from the event loop."""
        return await asyncio.wrap_future(self.call(fn))

    # ---- the thread ------------------------------------------------------------------------
    def _take_work(self) -> tuple[list[tuple[CallSlot, VideoFrame, float]], list[tuple[Callable[[], Any], Future]]]:
        with self._cond:
            while not self._stopped and not self._calls and not any(s._frame is not None for s in self._slots):
                self._cond.wait()
            if self._stopped:
                return [], []
            calls = list(self._calls)
            self._calls.clear()
            waiting = [s for s in self._slots if s._frame is not None]
            if len(waiting) > self.max_batch:  # the rest wait for the next step, oldest first next time
                start = self._next % len(waiting)
                waiting = (waiting[start:] + waiting[:start])[: self.max_batch]
                self._next += self.max_batch
            taken = []
            for slot in waiting:
                item = slot._take()
                if item is not None:
                    taken.append((slot, item[0], item[1]))
            return taken, calls

    def _run(self) -> None:
        while True:
            taken, calls = self._take_work()
            if self._stopped:
                break
            for fn, future in calls:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:  # handed to the caller, never kills the thread
                        future.set_exception(exc)
            if taken:
                self._step(taken)
        with self._cond:
            calls = list(self._calls)
            self._calls.clear()
        for _, future in calls:
            future.cancel()

    def _step(self, taken: list[tuple[CallSlot, VideoFrame, float]]) -> None:
        started = time.monotonic()
        t0 = time.perf_counter()
        items, ok = [], []
        results: list[Processed | None] = []
        for slot, frame, arrived in taken:
            try:
                items.append((slot.pipeline, to_rgb(frame)))
                ok.append((slot, frame, arrived))
            except Exception as exc:  # an undecodable frame: that call's problem only
                slot.deliver(Processed(None, exc, arrived, started, time.monotonic(), {}, len(taken)))
        outs = process_frames(items, self.matte_executor) if items else []
        for (slot, frame, arrived), result in zip(ok, outs, strict=True):
            rgb = None
            try:
                rgb = np.ascontiguousarray(result.result())
                out = to_frame(rgb, frame)
                error = None
            except Exception as exc:
                out, error = None, exc
            timings = dict(slot.pipeline.last_timings_ms)
            results.append(Processed(out, error, arrived, started, 0.0, timings, len(taken), rgb))
        step_ms = (time.perf_counter() - t0) * 1000.0
        done = time.monotonic()
        self.steps += 1
        if items:
            self._report_step([p for p, _ in items], step_ms)
        for (slot, _, _), r in zip(ok, results, strict=True):
            if r is None:
                continue
            r.done = done
            r.timings_ms["total"] = step_ms
            slot.deliver(r)

    def _report_step(self, pipelines: list[Pipeline], step_ms: float) -> None:
        """Tell the capacity model what the step cost, keyed by what it worked: the engine, the step count and the
        longest side frames were worked at (the pipeline's fit step), with the side the calls' settings ask for."""
        p = pipelines[0]
        worked = [max(q.last_size) for q in pipelines if q.last_size is not None]
        self.capacity.step_done(
            engine=p.engine.name,
            side=max(worked) if worked else max(p.settings.width, p.settings.height),
            steps=p.settings.steps,
            batch=len(pipelines),
            step_ms=step_ms,
            requested=max(max(q.settings.width, q.settings.height) for q in pipelines),
        )

    def shutdown(self, timeout: float = 2.0) -> None:
        """Stop after the step in flight (at most `timeout` s is waited for it)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if timeout > 0 and self._thread.ident is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
