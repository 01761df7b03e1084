"""GPU locks per device, with fencing tokens.

`lock:gpu:{device_id}` holds "{fence}|{owner}" under a lease (PX). Acquiring is one Lua
script (SET NX plus INCR of the device's fence counter), so each new holder gets a
larger fencing token; renewal is compare-and-extend and release compare-and-delete
(Lua), so a holder whose lease ran out can neither extend nor delete its successor's lock.

A lease alone cannot stop a holder that stalled past its lease (GC pause, swapped
out) from writing after its successor started. So the job stamps its fence on every
checkpoint and asks `check_fence(device_id, fence)` right before each write: only the
current holder's token passes. The worker that supervises a GPU job holds and renews
the lock and gives the child process its token in MISTUDIO_GPU_DEVICE / MISTUDIO_GPU_FENCE
(`job_fence()`, `job_may_commit()` read them).
"""

from __future__ import annotations

import os
import uuid

from mistudio.limits import ResourceBusy
from mistudio.redis import keys
from mistudio.redis.connection import get_client
from mistudio.redis.scripts import script
from mistudio.settings import Settings, get_settings
from mistudio.coord.polling import poll_until

ENV_DEVICE = "MISTUDIO_GPU_DEVICE"
ENV_FENCE = "MISTUDIO_GPU_FENCE"


def _parse(value: str | None) -> tuple[int, str] | None:
    if not value:
        return None
    fence, _, owner = value.partition("|")
    return int(fence), owner


class GpuLock:
    """The GPU of one device. `acquire()`, `renew()` (every ttl/3 or so), `release()`;
    `fence` is this holder's token. As a context manager it raises ResourceBusy if taken
    (it does not renew: the caller that runs long work renews, as the queue worker does)."""

    def __init__(self, device_id: str | None = None, *, holder: str = "", ttl: float | None = None,
                 client=None, settings: Settings | None = None):
        settings = settings or get_settings()
        self.device_id = device_id or settings.device_id
        self.key = keys.gpu_lock(self.device_id)
        self.fence_key = keys.gpu_fence(self.device_id)
        self.ttl_ms = int(1000 * (ttl or settings.lease_seconds))
        self.owner = f"{holder or 'holder'}/{uuid.uuid4().hex[:12]}"
        self.client = client or get_client("locks", settings=settings)
        self.value: str | None = None  # what we SET; None while not held
        self.fence: int | None = None

    def try_acquire(self) -> bool:
        res = script(self.client, "lock_acquire")(keys=[self.key, self.fence_key], args=[self.owner, self.ttl_ms])
        if int(res[0]) == 1:
            self.value = res[1]
            self.fence = _parse(self.value)[0]
            return True
        return False

    def acquire(self, timeout: float | None = 0, wait=None, poll: float = 0.2) -> bool:
        """Try until acquired or timeout (None: forever). wait(seconds) -> True aborts the wait."""
        return poll_until(self.try_acquire, timeout, wait, poll)

    def renew(self) -> bool:
        """Compare-and-extend. False: the lock was lost; stop using the GPU and commit nothing."""
        if self.value is None:
            return False
        if int(script(self.client, "lock_renew")(keys=[self.key], args=[self.value, self.ttl_ms])) == 1:
            return True
        self.value = None
        return False

    def release(self) -> bool:
        """Compare-and-delete. False if it had already expired (nothing of a successor's is touched)."""
        if self.value is None:
            return False
        released = int(script(self.client, "lock_release")(keys=[self.key], args=[self.value])) == 1
        self.value = None
        return released

    def __enter__(self) -> "GpuLock":
        if not self.try_acquire():
            held = holder(self.client, self.device_id)
            raise ResourceBusy(f"GPU {self.device_id} is busy (held by {held['owner'] if held else 'someone'})")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def check_fence(client, device_id: str, fence: int) -> bool:
    """True only if `fence` belongs to the current holder of the device's GPU lock. One GET,
    so atomic: a newer holder always has a larger token, an expired one has no lock."""
    current = _parse(client.get(keys.gpu_lock(device_id)))
    return current is not None and current[0] == int(fence)


def latest_fence(client, device_id: str) -> int:
    """The last fencing token handed out for the device (0 if never locked)."""
    return int(client.get(keys.gpu_fence(device_id)) or 0)


def holder(client, device_id: str) -> dict | None:
    """{fence, owner, ttl} of the current holder, or None when the GPU is free."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.gpu_lock(device_id))
    pipe.pttl(keys.gpu_lock(device_id))
    value, pttl = pipe.execute()
    parsed = _parse(value)
    if parsed is None:
        return None
    return {"device": device_id, "fence": parsed[0], "owner": parsed[1], "ttl": max(0, pttl) / 1000}


def job_fence() -> tuple[str, int] | None:
    """(device_id, fence) of the GPU lock the supervising worker holds for this process, if any."""
    device, fence = os.environ.get(ENV_DEVICE), os.environ.get(ENV_FENCE)
    return (device, int(fence)) if device and fence else None


def job_may_commit(settings: Settings | None = None) -> bool:
    """Call right before writing a checkpoint (stamped with job_fence()): False means a newer
    holder has the GPU and this process must write nothing. True when no GPU lock applies."""
    fence = job_fence()
    if fence is None:
        return True
    try:
        return check_fence(get_client("locks", settings=settings), *fence)
    except Exception:  # cannot prove we hold it: do not commit
        return False
