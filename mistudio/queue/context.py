"""JobContext: what a running task sees of the queue.

A task receives it as its first argument. It reports progress, asks whether it should
stop (cancel, lost lease, time limit, worker shutdown) and, before committing a
checkpoint or result, whether its lease still holds (fencing): a task that lost its
lease to a redelivery must not overwrite the new attempt's work.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from dataclasses import dataclass, field

from mistudio.queue import records

logger = logging.getLogger("mistudio.queue")

STOP_REASONS = ("cancelled", "lease_lost", "time_limit", "shutdown")
_current: contextvars.ContextVar["JobContext"] = contextvars.ContextVar("mistudio_job")


class JobStopped(Exception):
    """Raised by `JobContext.raise_if_stopped()`; the worker records the reason."""


@dataclass
class JobContext:
    job_id: str
    task: str
    queue: str
    attempt: int
    lease_id: str
    worker_id: str
    storage: object  # LeaseStorage (fencing checks)
    results: object  # redis client for the results database
    progress_interval: float = 0.5  # seconds between progress writes (the latest is kept)
    stop_reason: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _last_progress: float = 0.0
    _listeners: list = field(default_factory=list)

    # --- stopping ------------------------------------------------------------------

    def should_stop(self) -> bool:
        """Cheap (no Redis): poll it in loops, every step if you like."""
        return self._stop.is_set()

    def stop(self, reason: str) -> None:
        if reason not in STOP_REASONS:
            raise ValueError(reason)
        if self.stop_reason is None:
            self.stop_reason = reason
            logger.info("job %s: stopping (%s)", self.job_id, reason)
        self._stop.set()

    def raise_if_stopped(self) -> None:
        if self._stop.is_set():
            raise JobStopped(self.stop_reason)

    def wait(self, seconds: float) -> bool:
        """Sleep up to seconds; True if asked to stop meanwhile."""
        return self._stop.wait(seconds)

    # --- fencing -------------------------------------------------------------------

    def lease_valid(self) -> bool:
        if self.stop_reason in ("lease_lost", "shutdown"):
            return False
        try:
            return self.storage.lease_valid(self.lease_id)
        except Exception:  # cannot prove we hold it: do not commit
            logger.exception("job %s: cannot check the lease", self.job_id)
            return False

    def before_commit(self, *_args) -> bool:
        """Call right before writing a checkpoint or result; False means: write nothing.
        Both fences must hold: the queue lease, and (on a GPU queue) the device's GPU lock
        token this process was started with (coord.locks.job_fence)."""
        from mistudio.coord import locks

        if not self.lease_valid():
            logger.warning("job %s: lease %s lost, refusing to commit", self.job_id, self.lease_id)
            return False
        if not locks.job_may_commit():
            logger.warning("job %s: the GPU lock has a newer holder, refusing to commit", self.job_id)
            return False
        return True

    # --- progress ------------------------------------------------------------------

    def add_listener(self, fn) -> None:
        """fn(data, final) is called with each progress report (events hook in here)."""
        self._listeners.append(fn)

    def progress(self, data: dict, *, force: bool = False) -> None:
        """Record a progress snapshot (throttled to progress_interval unless force)."""
        now = time.monotonic()
        for fn in self._listeners:
            fn(data, force)
        if not force and now - self._last_progress < self.progress_interval:
            return
        self._last_progress = now
        try:
            records.set_progress(self.results, self.job_id, {**data, "attempt": self.attempt, "time": time.time()})
        except Exception:  # progress is best effort; the job goes on
            logger.exception("job %s: progress write failed", self.job_id)


def current() -> JobContext:
    ctx = _current.get(None)
    if ctx is None:
        raise RuntimeError("no job is running in this thread (JobContext is set by the queue worker)")
    return ctx


def activate(ctx: JobContext):
    return _current.set(ctx)


def deactivate(token) -> None:
    _current.reset(token)
