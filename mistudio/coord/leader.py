"""Leader election: one node runs the cluster duties (reaper, status, alerts).

`cluster:leader` holds "{term}|{node_id}" under a lease. Taking it is SET NX plus an
INCR of `cluster:leader:term` in one Lua script, so each leadership has its own term
and "at most one leader per term" holds by construction. Renewal is compare-and-extend
in Lua: the seed's GET-then-EXPIRE can extend a key another node has just taken.

A node also stops believing it leads before its lease can have run out in Redis: it
counts the lease from the moment it SENT the request, and steps down at 90 % of it if
no renewal succeeded, so two nodes never both act as leader (clocks tick at the same rate).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from mistudio.redis import keys
from mistudio.redis.scripts import script

logger = logging.getLogger("mistudio.coord.leader")

SAFETY = 0.9  # fraction of the lease a leader trusts itself for


def try_acquire(client, node_id: str, ttl: float) -> str | None:
    """Become leader if nobody is. Returns our value "{term}|{node_id}", or None."""
    res = script(client, "lock_acquire")(keys=[keys.cluster_leader(), keys.cluster_term()], args=[node_id, int(ttl * 1000)])
    return res[1] if int(res[0]) == 1 else None


def renew(client, value: str, ttl: float) -> bool:
    return int(script(client, "lock_renew")(keys=[keys.cluster_leader()], args=[value, int(ttl * 1000)])) == 1


def resign(client, value: str) -> bool:
    return int(script(client, "lock_release")(keys=[keys.cluster_leader()], args=[value])) == 1


def current(client) -> dict | None:
    """{node, term, ttl} of the current leader, or None."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.cluster_leader())
    pipe.pttl(keys.cluster_leader())
    value, pttl = pipe.execute()
    if not value:
        return None
    term, _, node = value.partition("|")
    return {"node": node, "term": int(term), "ttl": max(0, pttl) / 1000}


class Elector(threading.Thread):
    """Campaigns and renews every ttl/3 in the background; `is_leader()` is cheap (no Redis).
    on_change(term or None) is called when this node gains or loses leadership."""

    def __init__(self, client, node_id: str, ttl: float, on_change: Callable[[int | None], None] | None = None):
        super().__init__(name=f"elector-{node_id}", daemon=True)
        self.client, self.node_id, self.ttl = client, node_id, float(ttl)
        self.on_change = on_change
        self.value: str | None = None
        self.valid_until = 0.0  # time.monotonic() after which we no longer trust our lease
        self.stopped = threading.Event()

    @property
    def term(self) -> int | None:
        return int(self.value.partition("|")[0]) if self.value and self.is_leader() else None

    def is_leader(self) -> bool:
        return self.value is not None and time.monotonic() < self.valid_until

    def run(self) -> None:
        while not self.stopped.is_set():
            self.step()
            self.stopped.wait(self.ttl / 3)

    def step(self) -> None:
        sent = time.monotonic()
        was = self.term
        try:
            if self.value is not None and renew(self.client, self.value, self.ttl):
                self.valid_until = sent + SAFETY * self.ttl
            else:
                self.value = try_acquire(self.client, self.node_id, self.ttl)
                if self.value is not None:
                    self.valid_until = sent + SAFETY * self.ttl
        except Exception as exc:  # Redis away: keep the lease we have until it runs out
            logger.warning("election: %s", exc)
        if not self.is_leader():
            self.value = None
        if self.term != was:
            logger.info("%s: %s", self.node_id, f"leader (term {self.term})" if self.term else "no longer leader")
            if self.on_change is not None:
                self.on_change(self.term)

    def stop(self) -> None:
        """Stop campaigning and hand leadership over at once (another node takes it on its next try)."""
        self.stopped.set()
        if self.value is not None:
            try:
                resign(self.client, self.value)
            except Exception:
                pass
            self.value = None
