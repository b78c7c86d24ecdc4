"""A call's failing frames: told to the caller, logged once, and survived.

The first failing frame of a streak sends a `status` with the reason. After `fall_back_after`
failures in a row the call is moved to something that runs: an out-of-memory failure reverts
the settings to the last ones that produced a frame (the change that caused it); anything else
switches this call to the server's fallback engine. Either way the caller is told, and frames
keep flowing (the sender shows the last good frame until new ones come). The log gets one
traceback per streak, then a count at most every `log_every_s`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from speakdraw.settings import Settings

if TYPE_CHECKING:  # typing only
    from server.session import Session

log = logging.getLogger(__name__)


def is_out_of_memory(error: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, MemoryError, or a runtime error that says so."""
    return isinstance(error, MemoryError) or "out of memory" in str(error).lower()


def describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


class FrameFaults:
    def __init__(self, session: Session, fall_back_after: int = 3, log_every_s: float = 10.0) -> None:
        self.session = session
        self.fall_back_after = fall_back_after
        self.log_every_s = log_every_s
        self.streak = 0
        self.total = 0
        self.recoveries: list[str] = []  # what was done, in order ("reverted ...", "fell back ...")
        self.last_good: Settings | None = None
        self._unlogged = 0
        self._logged_at = 0.0

    def frame_ok(self) -> None:
        if self.streak:
            log.info("session %s: frames flow again after %d failures", self.session.id[:8], self.streak)
        self.streak = 0
        self.last_good = self.session.pipeline.settings

    def settings_changed(self) -> None:
        """A new change gets a fresh chance (its own failures are counted from zero)."""
        self.streak = 0

    def frame_failed(self, error: BaseException) -> None:
        self.total += 1
        self.streak += 1
        sid = self.session.id[:8]
        if self.streak == 1:
            log.error("session %s: a frame failed", sid, exc_info=(type(error), error, error.__traceback__))
            self._logged_at = time.monotonic()
            self.session.send(
                self.session.status_message(f"a frame failed ({describe(error)}); the last good frame stays on")
            )
        else:
            self._unlogged += 1
            if time.monotonic() - self._logged_at > self.log_every_s:
                log.error("session %s: %d more failed frames (%s)", sid, self._unlogged, describe(error))
                self._unlogged, self._logged_at = 0, time.monotonic()
        if self.streak >= self.fall_back_after:
            self._recover(error)
            self.streak = 0

    def _recover(self, error: BaseException) -> None:
        session = self.session
        pipeline = session.pipeline
        current = pipeline.current
        if is_out_of_memory(error) and self.last_good is not None and current != self.last_good:
            changed = sorted(current.changed_fields(self.last_good))
            back = {name: getattr(self.last_good, name) for name in changed}
            session.update_settings(back)
            what = f"out of memory after changing {', '.join(changed)}: reverted to the last settings that worked"
            session.send({"type": "settings", "settings": pipeline.current.model_dump()})
        else:
            fallback = session.state.fallback
            if pipeline.engine is fallback:
                return  # nothing further to fall back to; keep telling the caller
            pipeline.set_engine(fallback)
            what = (
                f"the {pipeline.engine.name} engine keeps failing ({describe(error)}): "
                f"this call now uses {fallback.name}"
            )
        self.recoveries.append(what)
        log.warning("session %s: %s", session.id[:8], what)
        session.send(session.status_message(what))
        session.send({"type": "error", "code": "pipeline_error", "message": what})
