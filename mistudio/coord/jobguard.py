"""What a running job holds besides its queue lease, for the worker that runs it.

- its assignment (`job:{id}:assignment`, `worker:{id}:jobs`);
- its task's concurrency slot (coord/slots.py: one training, two downloads... per device;
  which slot a task takes is the worker's to say), a lease that a dead worker's job gives up by itself;
- on an isolated (GPU) queue, the device's GPU lock and its fencing token.

The worker acquires the slot and the GPU before the job runs, waiting while they are busy
(the job stays claimed, its queue lease renewed, and waits its turn: queued work is never
refused), renews them with the queue lease, and releases them when the job ends.
Slot first, then GPU, always in that order, so two waiting jobs cannot deadlock.

Two threads share a guard: the job's own (acquire, release) and the worker's keeper
(assign, renew). Its state is one small machine under one lock:

    unassigned -> assigned(status) -> released

`acquire()` only moves the status forward in memory (waiting for a slot -> waiting for
the GPU -> running); the keeper's `assign()` writes the current status to Redis, holding
the lock while it does, so `release()` either follows that write (and removes it) or
comes first (and the keeper writes nothing, ever again). What an observer may rely on:
an assignment appears within a keeper visit of the job starting (not with the record's
`running`: the start path stays short), its status never goes back, and it is gone once
the worker let go of the job.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from mistudio.coord import assignments, locks
from mistudio.coord.slots import Slot
from mistudio.redis.connection import get_client
from mistudio.settings import Settings

logger = logging.getLogger("mistudio.coord.jobguard")

RUNNING = "running"
RETRY_SECONDS = 1.0  # after a failed or refused assignment write, before the keeper tries again


class JobGuard:
    def __init__(self, settings: Settings, *, job_id: str, slot: str | None, worker_id: str, gpu: bool):
        """slot: the name of the concurrency limit the job takes one slot of (None: no limit)."""
        self.job_id, self.worker_id, self.device = job_id, worker_id, settings.device_id
        self.client = get_client("locks", settings=settings)
        self.slot = Slot(slot, holder=job_id, settings=settings) if slot else None
        self.gpu = locks.GpuLock(self.device, holder=f"{worker_id}/{job_id}", settings=settings) if gpu else None
        self.holder = f"{worker_id}/{uuid.uuid4().hex[:12]}"  # this delivery's, in the assignment
        self.assigned_at = time.time()
        self._lock = threading.Lock()  # guards everything below
        self._held: list = []  # what we hold now, in acquisition order
        self._stage, self._status = 0, None  # what the job is doing; None until acquire() knows
        self._written: str | None = None  # the status last recorded in Redis
        self._touched = False  # a write was sent (it may have landed even if it raised)
        self._released = False
        self._retry_at = 0.0
        self._refused_logged = False

    def _advance(self, stage: int, status: str) -> None:
        """Statuses only move forward: a late step never undoes a later one."""
        with self._lock:
            if not self._released and stage > self._stage:
                self._stage, self._status = stage, status

    def assign(self) -> None:
        """Record the assignment, or its new status, if there is something new (the keeper calls
        this on each visit; cheap when there is not). Never raises: a failed write is retried."""
        with self._lock:
            if (self._released or self._status is None or self._status == self._written
                    or time.monotonic() < self._retry_at):
                return
            self._touched = True
            try:
                written = assignments.assign(self.client, self.job_id, self.worker_id, self.device,
                                             status=self._status, holder=self.holder, assigned_at=self.assigned_at)
            except Exception as exc:
                logger.warning("job %s: could not record its assignment (will retry): %s", self.job_id, exc)
                self._retry_at = time.monotonic() + RETRY_SECONDS
                return
            if written:
                self._written = self._status
                return
            # Another delivery of this job (one whose lease ran out, still stopping) has it.
            if not self._refused_logged:
                logger.info("job %s: its assignment is still another delivery's; retrying", self.job_id)
                self._refused_logged = True
            self._retry_at = time.monotonic() + RETRY_SECONDS

    def acquire(self, wait) -> bool:
        """Take the slot and the GPU, waiting while busy. wait(seconds) -> True (the job must stop) aborts."""
        for stage, what in enumerate((self.slot, self.gpu), start=1):
            if what is None:
                continue
            if not what.try_acquire():
                name = f"a {what.name} slot" if what is self.slot else f"GPU {self.device}"
                logger.info("job %s: waiting for %s", self.job_id, name)
                self._advance(stage, f"waiting for {name}")
                if not what.acquire(timeout=None, wait=wait):
                    return False
            with self._lock:
                self._held.append(what)
        self._advance(3, RUNNING)
        return True

    def renew(self) -> bool:
        """Extend what is held (call with the queue lease). False: something was lost; stop the job."""
        with self._lock:
            return all([what.renew() for what in self._held])

    def release(self) -> None:
        """Let go of everything. Waits for an assignment write in flight; after it, none is made."""
        with self._lock:
            self._released = True
            held, self._held = self._held[::-1], []
            touched = self._touched
        for what in held:
            try:
                what.release()
            except Exception as exc:  # its lease expires by itself
                logger.warning("job %s: release failed: %s", self.job_id, exc)
        if not touched:
            return  # the job ended before the keeper recorded anything: nothing to remove
        try:
            assignments.unassign(self.client, self.job_id, self.worker_id, self.holder)
        except Exception as exc:  # left behind: its TTL, or forget_worker when this worker dies
            logger.warning("job %s: unassign failed: %s", self.job_id, exc)

    def child_env(self) -> dict[str, str]:
        """For the job's child process: the GPU lock's device and fencing token (locks.job_fence)."""
        if self.gpu is None or self.gpu.fence is None:
            return {}
        return {locks.ENV_DEVICE: self.device, locks.ENV_FENCE: str(self.gpu.fence)}
