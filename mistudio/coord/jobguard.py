"""What a running job holds besides its queue lease, for the worker that runs it.

- its assignment (`job:{id}:assignment`, `worker:{id}:jobs`);
- its task's concurrency slot (limits_config.TASK_SLOTS: one training, two downloads...
  per device), a lease that a dead worker's job gives up by itself;
- on an isolated (GPU) queue, the device's GPU lock and its fencing token.

The worker acquires them before the job runs, waiting while they are busy (the job
stays claimed, its queue lease renewed, and waits its turn: queued work is never
refused), renews them with the queue lease, and releases them when the job ends.
Slot first, then GPU, always in that order, so two waiting jobs cannot deadlock.
"""

from __future__ import annotations

import logging
import threading

from mistudio import limits_config
from mistudio.coord import assignments, locks
from mistudio.limits import Slot
from mistudio.redis.connection import get_client
from mistudio.settings import Settings

logger = logging.getLogger("mistudio.coord.jobguard")


class JobGuard:
    def __init__(self, settings: Settings, *, job_id: str, task: str, worker_id: str, gpu: bool):
        self.job_id, self.worker_id, self.device = job_id, worker_id, settings.device_id
        self.client = get_client("locks", settings=settings)
        slot_name = limits_config.TASK_SLOTS.get(task)
        self.slot = Slot(slot_name, holder=job_id, settings=settings) if slot_name else None
        self.gpu = locks.GpuLock(self.device, holder=f"{worker_id}/{job_id}", settings=settings) if gpu else None
        self._held: list = []  # what we hold now, in acquisition order
        self._lock = threading.Lock()
        self._assigned = False

    def assign(self) -> None:
        """Record the assignment (once). The worker's keeper calls it off the job's start path."""
        with self._lock:
            if self._assigned:
                return
            self._assigned = True
        assignments.assign(self.client, self.job_id, self.worker_id, self.device)

    def acquire(self, wait) -> bool:
        """Take the slot and the GPU, waiting while busy. wait(seconds) -> True (the job must stop) aborts."""
        for what in (self.slot, self.gpu):
            if what is None:
                continue
            if not what.try_acquire():
                name = f"a {what.name} slot" if what is self.slot else f"GPU {self.device}"
                logger.info("job %s: waiting for %s", self.job_id, name)
                self.assign()
                assignments.set_status(self.client, self.job_id, f"waiting for {name}")
                if not what.acquire(timeout=None, wait=wait):
                    return False
                assignments.set_status(self.client, self.job_id, "running")
            with self._lock:
                self._held.append(what)
        return True

    def renew(self) -> bool:
        """Extend what is held (call with the queue lease). False: something was lost; stop the job."""
        with self._lock:
            return all([what.renew() for what in self._held])

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held[::-1], []
        for what in held:
            try:
                what.release()
            except Exception as exc:  # its lease expires by itself
                logger.warning("job %s: release failed: %s", self.job_id, exc)
        try:
            assignments.unassign(self.client, self.job_id, self.worker_id)
        except Exception as exc:
            logger.warning("job %s: unassign failed: %s", self.job_id, exc)

    def child_env(self) -> dict[str, str]:
        """For the job's child process: the GPU lock's device and fencing token (locks.job_fence)."""
        if self.gpu is None or self.gpu.fence is None:
            return {}
        return {locks.ENV_DEVICE: self.device, locks.ENV_FENCE: str(self.gpu.fence)}
