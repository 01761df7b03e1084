"""GPU locks per device, with fencing tokens.

`lock:gpu:{device_id}` holds "{fence}|{owner}" under a lease: an ExclusiveLease (coord/lease.py)
numbered by the device's fence counter (`lock:gpu:{device_id}:fence`), so each new holder gets a
larger fencing token, and a holder whose lease ran out can neither extend nor delete its
successor's lock.

A lease alone cannot stop a holder that stalled past its lease (GC pause, swapped
out) from writing after its successor started. So the job stamps its fence on every
checkpoint and asks `check_fence(device_id, fence)` right before each write: only the
current holder's token passes. The worker that supervises a GPU job holds and renews
the lock and gives the child process its token in MISTUDIO_GPU_DEVICE / MISTUDIO_GPU_FENCE
(`job_fence()`, `job_may_commit()` read them).
"""

from __future__ import annotations

import os

from mistudio.coord.lease import ExclusiveLease, ResourceBusy, current, new_token, parse
from mistudio.redis import keys
from mistudio.redis.connection import get_client
from mistudio.settings import Settings, get_settings

__all__ = ["ENV_DEVICE", "ENV_FENCE", "GpuLock", "ResourceBusy", "check_fence", "holder", "job_fence",
           "job_may_commit", "latest_fence"]

ENV_DEVICE = "MISTUDIO_GPU_DEVICE"
ENV_FENCE = "MISTUDIO_GPU_FENCE"


class GpuLock(ExclusiveLease):
    """The GPU of one device, an exclusive lease numbered by the device's fence counter:
    `acquire()`, `renew()` (every ttl/3 or so), `release()`; `fence` is this holder's token.
    As a context manager it raises ResourceBusy if taken, and renews in the background."""

    def __init__(self, device_id: str | None = None, *, holder: str = "", ttl: float | None = None,
                 client=None, settings: Settings | None = None):
        settings = settings or get_settings()
        self.device_id = device_id or settings.device_id
        super().__init__(client or get_client("locks", settings=settings), keys.gpu_lock(self.device_id),
                         keys.gpu_fence(self.device_id), token=new_token(holder), ttl=ttl or settings.lease_seconds)

    owner = property(lambda self: self.token, doc="who we are in the lock's value")
    fence = property(lambda self: self.number, doc="this holder's fencing token (None before the first acquire)")

    def busy_message(self) -> str:
        held = holder(self.client, self.device_id)
        return f"GPU {self.device_id} is busy (held by {held['owner'] if held else 'someone'})"


def check_fence(client, device_id: str, fence: int) -> bool:
    """True only if `fence` belongs to the current holder of the device's GPU lock. One GET,
    so atomic: a newer holder always has a larger token, an expired one has no lock."""
    held = parse(client.get(keys.gpu_lock(device_id)))
    return held is not None and held[0] == int(fence)


def latest_fence(client, device_id: str) -> int:
    """The last fencing token handed out for the device (0 if never locked)."""
    return int(client.get(keys.gpu_fence(device_id)) or 0)


def holder(client, device_id: str) -> dict | None:
    """{device, fence, owner, ttl} of the current holder, or None when the GPU is free."""
    held = current(client, keys.gpu_lock(device_id))
    return None if held is None else {"device": device_id, "fence": held["number"], "owner": held["owner"],
                                      "ttl": held["ttl"]}


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
