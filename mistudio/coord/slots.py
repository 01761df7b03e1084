"""Concurrency slots: at most N holders of a named limit per device (limits_config.CONCURRENCY).

    from mistudio.coord import slots
    with slots.slot("generations"):            # one of CONCURRENCY["generations"] slots, or ResourceBusy
        ...

Each slot is a CountedLease (coord/lease.py): a sorted set of holder tokens scored by lease
expiry, so a holder that dies frees its slot when its lease runs out (an INCR/DECR counter
would leak it forever). The queue worker takes the slot of a job's task before it runs it
(coord/jobguard.py); `with slot(...)` serves work outside the queue.
"""

from __future__ import annotations

from mistudio import limits_config as config
from mistudio.coord.lease import CountedLease, ResourceBusy, new_token
from mistudio.errors import InvalidInput
from mistudio.redis import keys
from mistudio.redis.connection import get_client
from mistudio.settings import Settings, get_settings

__all__ = ["ResourceBusy", "Slot", "slot"]


class Slot(CountedLease):
    """One slot of the concurrency limit `name`, in `scope` (default: this device)."""

    def __init__(self, name: str, *, scope: str | None = None, ttl: float | None = None, holder: str = "",
                 client=None, settings: Settings | None = None):
        settings = settings or get_settings()
        if name not in config.CONCURRENCY:
            raise InvalidInput("slot", f"unknown concurrency limit {name!r}", f"use one of {', '.join(config.CONCURRENCY)}")
        self.name = name
        self.scope = scope or settings.device_id  # per device: see limits_config
        super().__init__(client or get_client("ratelimit", settings=settings), keys.concurrency_slots(self.scope, name),
                         config.CONCURRENCY[name], token=new_token(holder), ttl=ttl or settings.lease_seconds)

    def acquire(self, timeout: float | None = None, wait=None, poll: float = 0.25) -> bool:
        """Wait for a slot (up to timeout; None: forever). wait(seconds) -> True aborts (e.g. JobContext.wait)."""
        return super().acquire(timeout, wait, poll)

    def busy_message(self) -> str:
        return (f"all {self.limit} {self.name} slot(s) are busy on {self.scope}: "
                "wait for one to finish, or use Slot.acquire(timeout=...)")


def slot(name: str, **kwargs) -> Slot:
    """`with slots.slot("generations"):` holds one slot (renewed in the background) or raises ResourceBusy."""
    return Slot(name, **kwargs)
