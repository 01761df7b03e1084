"""Leader election: one node runs the cluster duties (reaper, status, alerts).

`cluster:leader` holds "{term}|{node_id}" under an ExclusiveLease (coord/lease.py) numbered
by `cluster:leader:term`, so each leadership has its own term and "at most one leader per
term" holds by construction. Renewal is compare-and-extend in Lua: the seed's
GET-then-EXPIRE can extend a key another node has just taken.

A node also stops believing it leads before its lease can have run out in Redis: it
counts the lease from the moment it SENT the request, and steps down at 90 % of it if
no renewal succeeded, so two nodes never both act as leader (clocks tick at the same rate).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from mistudio.coord import lease
from mistudio.redis import keys

logger = logging.getLogger("mistudio.coord.leader")

SAFETY = 0.9  # fraction of the lease a leader trusts itself for


def leadership(client, node_id: str, ttl: float) -> lease.ExclusiveLease:
    """The leader's lease: `cluster:leader` = "{term}|{node_id}", numbered by `cluster:leader:term`."""
    return lease.ExclusiveLease(client, keys.cluster_leader(), keys.cluster_term(), token=node_id, ttl=ttl)


def try_acquire(client, node_id: str, ttl: float) -> str | None:
    """Become leader if nobody is. Returns our value "{term}|{node_id}", or None."""
    return lease.take(client, keys.cluster_leader(), keys.cluster_term(), node_id, ttl)


def renew(client, value: str, ttl: float) -> bool:
    return lease.extend(client, keys.cluster_leader(), value, ttl)


def resign(client, value: str) -> bool:
    return lease.give_up(client, keys.cluster_leader(), value)


def current(client) -> dict | None:
    """{node, term, ttl} of the current leader, or None."""
    held = lease.current(client, keys.cluster_leader())
    return None if held is None else {"node": held["owner"], "term": held["number"], "ttl": held["ttl"]}


class Elector(threading.Thread):
    """Campaigns and renews every ttl/3 in the background; `is_leader()` is cheap (no Redis).
    on_change(term or None) is called when this node gains or loses leadership."""

    def __init__(self, client, node_id: str, ttl: float, on_change: Callable[[int | None], None] | None = None):
        super().__init__(name=f"elector-{node_id}", daemon=True)
        self.client, self.node_id, self.ttl = client, node_id, float(ttl)
        self.on_change = on_change
        self.lease = leadership(client, node_id, self.ttl)
        self.valid_until = 0.0  # time.monotonic() after which we no longer trust our lease
        self.stopped = threading.Event()

    @property
    def term(self) -> int | None:
        return self.lease.number if self.is_leader() else None

    def is_leader(self) -> bool:
        return self.lease.held and time.monotonic() < self.valid_until

    def run(self) -> None:
        while not self.stopped.is_set():
            self.step()
            self.stopped.wait(self.ttl / 3)

    def step(self) -> None:
        sent = time.monotonic()
        was = self.term
        try:
            if self.lease.renew() or self.lease.try_acquire():
                self.valid_until = sent + SAFETY * self.ttl
        except Exception as exc:  # Redis away: keep the lease we have until it runs out
            logger.warning("election: %s", exc)
        if not self.is_leader():
            self.lease.held = False  # run out: campaign afresh next time
        if self.term != was:
            logger.info("%s: %s", self.node_id, f"leader (term {self.term})" if self.term else "no longer leader")
            if self.on_change is not None:
                self.on_change(self.term)

    def stop(self) -> None:
        """Stop campaigning and hand leadership over at once (another node takes it on its next try)."""
        self.stopped.set()
        try:
            self.lease.release()
        except Exception:  # Redis away: the lease runs out by itself
            pass
