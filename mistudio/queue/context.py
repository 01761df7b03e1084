"""JobContext: what a running task sees of the queue.

A task receives it as its first argument. It reports progress, asks whether it should
stop (cancel, lost lease, time limit, worker shutdown) and, before committing a
checkpoint or result, whether its lease still holds (fencing): a task that lost its
lease to a redelivery must not overwrite the new attempt's work.

"Redis cannot be reached" is not "the lease is lost": a commit waits and asks again
(for up to a lease length, the longest a lease can outlive its last renewal), so a
Redis restart shorter than the lease costs the job nothing. Only a lease known to be
gone, or one that could not be confirmed for that long, refuses the commit; the job
then stops as "lease_lost" and comes back through the queue: it does not fail.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from dataclasses import dataclass, field

import redis

from mistudio.coord import locks
from mistudio.queue import records
from mistudio.redis.connection import get_client

logger = logging.getLogger("mistudio.queue")

STOP_REASONS = ("cancelled", "lease_lost", "time_limit", "shutdown")
# Redis away (restarting, loading its data, network): worth waiting for.
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
PROGRESS_BACKOFF = 2.0  # seconds without progress writes after one failed (Redis away: keep training)
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
    _progress_paused_until: float = 0.0

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
        """True while this delivery holds its lease. Waits while Redis cannot be reached."""
        return self._confirm("the lease", lambda: self.storage.lease_valid(self.lease_id))

    def before_commit(self, *_args) -> bool:
        """Call right before writing a checkpoint or result; False means: write nothing.
        Both fences must hold: the queue lease, and (on a GPU queue) the device's GPU lock
        token this process was started with (coord.locks.job_fence). A fence found lost
        stops the job as "lease_lost": another delivery will run it."""
        if not self.lease_valid():
            logger.warning("job %s: lease %s lost, refusing to commit", self.job_id, self.lease_id)
            self.stop("lease_lost")
            return False
        fence = locks.job_fence()
        if fence is not None:
            client = get_client("locks")
            if not self._confirm("the GPU lock", lambda: locks.check_fence(client, *fence)):
                logger.warning("job %s: the GPU lock has a newer holder, refusing to commit", self.job_id)
                self.stop("lease_lost")
                return False
        return True

    def _confirm(self, what: str, check) -> bool:
        """check() -> bool, asked again while Redis cannot be reached, for up to a lease length
        (or until this delivery is told its lease is lost or the worker stops)."""
        give_up, delay = None, 0.1
        while self.stop_reason not in ("lease_lost", "shutdown"):
            try:
                return bool(check())
            except UNREACHABLE as exc:
                now = time.monotonic()
                if give_up is None:
                    give_up = now + float(self.storage.lease_seconds)
                    logger.warning("job %s: cannot reach Redis to check %s (%s); asking again for up to %.0f s",
                                   self.job_id, what, exc, give_up - now)
                elif now >= give_up:
                    logger.warning("job %s: could not confirm %s for %.0f s", self.job_id, what,
                                   self.storage.lease_seconds)
                    return False
            except Exception:  # an answer we cannot read proves nothing: do not commit
                logger.exception("job %s: cannot check %s", self.job_id, what)
                return False
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        return False

    # --- progress ------------------------------------------------------------------

    def progress(self, data: dict, *, force: bool = False) -> None:
        """Record a progress snapshot (throttled to progress_interval unless force)."""
        now = time.monotonic()
        if not force and now - self._last_progress < self.progress_interval:
            return
        if now < self._progress_paused_until:
            return
        self._last_progress = now
        try:
            records.set_progress(self.results, self.job_id, {**data, "attempt": self.attempt, "time": time.time()})
        except Exception as exc:  # progress is best effort; the job goes on
            self._progress_paused_until = now + PROGRESS_BACKOFF
            logger.warning("job %s: progress write failed (%s); skipping them for %.0f s", self.job_id, exc,
                           PROGRESS_BACKOFF)


def current() -> JobContext:
    ctx = _current.get(None)
    if ctx is None:
        raise RuntimeError("no job is running in this thread (JobContext is set by the queue worker)")
    return ctx


def in_worker() -> bool:
    """True inside a job's body or its worker-side parameter check (a JobContext is active)."""
    return _current.get(None) is not None


def activate(ctx: JobContext):
    return _current.set(ctx)


def deactivate(token) -> None:
    _current.reset(token)
