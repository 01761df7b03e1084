"""The lease: what the GPU lock, a concurrency slot and the leader each hold.

A lease is held under a token unique to its holder and lapses by itself after its TTL unless
renewed, so a holder that dies frees it. Every step is one Lua script: acquire, renew only if
the token still holds it (compare-and-extend), release only if it does (compare-and-delete),
so a holder whose lease ran out can neither extend nor delete its successor's.

Two shapes, one contract (`try_acquire`, `acquire`, `renew`, `release`, `held`):

- `ExclusiveLease`: one holder. The key holds "{n}|{owner}" (PX); acquiring INCRs a counter
  beside it, so every holder gets a larger number: the GPU lock's fencing token, the leader's
  term (lock_acquire / lock_renew / lock_release.lua).
- `CountedLease`: up to N holders, a sorted set of tokens scored by expiry (Redis TIME), the
  expired dropped first (slot_acquire / slot_renew / slot_release.lua): a concurrency slot.

As a context manager a lease raises ResourceBusy if taken, else holds it, renewed in the
background every ttl/3 until the block ends.
"""

from __future__ import annotations

import threading
import uuid

from mistudio.coord.polling import poll_until
from mistudio.errors import MistudioError
from mistudio.redis.scripts import script


class ResourceBusy(MistudioError):
    """A concurrency slot or a GPU lock is held by someone else (the seed's ResourceBusyError)."""


def new_token(holder: str) -> str:
    """Unique per holder, readable in Redis: "{holder}/{12 hex}"."""
    return f"{holder or 'holder'}/{uuid.uuid4().hex[:12]}"


def parse(value: str | None) -> tuple[int, str] | None:
    """An exclusive lease's value "{n}|{owner}" -> (n, owner); None when free."""
    if not value:
        return None
    number, _, owner = value.partition("|")
    return int(number), owner


class Lease:
    """The contract and the background renewal; subclasses do the three scripts."""

    def __init__(self, client, key: str, token: str, ttl: float):
        self.client, self.key, self.token, self.ttl = client, key, token, float(ttl)
        self.held = False
        self._stop = threading.Event()  # stops the background renewal of `with lease:`

    def try_acquire(self) -> bool:
        self.held = self._acquire()
        return self.held

    def acquire(self, timeout: float | None = 0, wait=None, poll: float = 0.2) -> bool:
        """Try until acquired or timeout seconds pass (None: forever). wait(seconds) -> True aborts."""
        return poll_until(self.try_acquire, timeout, wait, poll)

    def renew(self) -> bool:
        """Extend the lease if still ours. False: it was lost (someone else may hold it now): stop."""
        self.held = self.held and self._renew()
        return self.held

    def release(self) -> bool:
        """Let go if still ours. False if it had lapsed already (a successor's is never touched)."""
        self._stop.set()
        was, self.held = self.held, False
        return was and self._release()

    def busy_message(self) -> str:
        return f"{self.key} is held by someone else"

    def __enter__(self):
        if not self.try_acquire():
            raise ResourceBusy(self.busy_message())
        self._stop = threading.Event()
        threading.Thread(target=self._keep, args=(self._stop,), name=f"lease-{self.key}", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _keep(self, stop: threading.Event) -> None:
        while not stop.wait(self.ttl / 3):
            try:
                if not self.renew():
                    return
            except Exception:
                pass  # Redis blip: try again; the lease outlives two missed renewals

    def _acquire(self) -> bool:
        raise NotImplementedError

    def _renew(self) -> bool:
        raise NotImplementedError

    def _release(self) -> bool:
        raise NotImplementedError


class ExclusiveLease(Lease):
    """One holder, numbered by `counter_key` (fencing token, term). `number` is ours while held."""

    def __init__(self, client, key: str, counter_key: str, *, token: str, ttl: float):
        super().__init__(client, key, token, ttl)
        self.counter_key = counter_key
        self.value: str | None = None  # what we SET, "{number}|{token}"; None while not held
        self.number: int | None = None

    def _acquire(self) -> bool:
        self.value = take(self.client, self.key, self.counter_key, self.token, self.ttl)
        if self.value is None:
            return False
        self.number = parse(self.value)[0]
        return True

    def _renew(self) -> bool:
        if extend(self.client, self.key, self.value, self.ttl):
            return True
        self.value = None
        return False

    def _release(self) -> bool:
        value, self.value = self.value, None
        return give_up(self.client, self.key, value)

    def current(self) -> dict | None:
        """{number, owner, ttl} of whoever holds it now, or None when free."""
        return current(self.client, self.key)


def take(client, key: str, counter_key: str, token: str, ttl: float) -> str | None:
    """Take an exclusive lease if free: our value "{number}|{token}", or None when held."""
    res = script(client, "lock_acquire")(keys=[key, counter_key], args=[token, int(ttl * 1000)])
    return res[1] if int(res[0]) == 1 else None


def extend(client, key: str, value: str, ttl: float) -> bool:
    """Compare-and-extend: False if `value` no longer holds the key."""
    return int(script(client, "lock_renew")(keys=[key], args=[value, int(ttl * 1000)])) == 1


def give_up(client, key: str, value: str) -> bool:
    """Compare-and-delete: False if `value` no longer held the key (nothing else is touched)."""
    return int(script(client, "lock_release")(keys=[key], args=[value])) == 1


def current(client, key: str) -> dict | None:
    """{number, owner, ttl (seconds)} of an exclusive lease's holder, or None when free."""
    pipe = client.pipeline(transaction=False)
    pipe.get(key)
    pipe.pttl(key)
    value, pttl = pipe.execute()
    parsed = parse(value)
    if parsed is None:
        return None
    return {"number": parsed[0], "owner": parsed[1], "ttl": max(0, pttl) / 1000}


class CountedLease(Lease):
    """One of `limit` holders of `key` (keys.concurrency_slots)."""

    def __init__(self, client, key: str, limit: int, *, token: str, ttl: float):
        super().__init__(client, key, token, ttl)
        self.limit = limit

    def _acquire(self) -> bool:
        ok, _ = script(self.client, "slot_acquire")(keys=[self.key], args=[self.limit, self.token, self.ttl])
        return bool(int(ok))

    def _renew(self) -> bool:
        return float(script(self.client, "slot_renew")(keys=[self.key], args=[self.token, self.ttl]) or 0) > 0

    def _release(self) -> bool:
        return int(script(self.client, "slot_release")(keys=[self.key], args=[self.token])) == 1

    def holders(self) -> list[str]:
        """The tokens whose lease has not run out (by Redis' clock)."""
        now = self.client.time()
        return self.client.zrangebyscore(self.key, now[0] + now[1] / 1e6, "+inf")

