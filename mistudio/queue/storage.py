"""Huey storage with leases: at-least-once delivery on Redis.

Huey's Redis storages pop a message and forget it, so a worker that dies mid-task
loses the task. This storage claims a message into an in-flight hash under a lease
(one Lua script: pop, record, deadline from Redis TIME, count the attempt). The
worker renews the lease while the task runs and acknowledges it after; a reaper
requeues expired leases and dead-letters a job after max_attempts deliveries.

Contract of each method (beyond Huey's BaseStorage):
- enqueue(data, priority): add a message; higher priority first, FIFO within one.
- claim(worker_id) -> Lease | None: take the next message under a lease; blocks up
  to read_timeout when the queue is empty.
- renew(lease) -> bool: extend the lease; False means it was lost: stop, commit nothing.
- lease_valid(lease_id) -> bool: the lease exists and its deadline has not passed.
- ack(lease) -> bool: the job ended; False if the lease had already been lost.
- release(lease) -> bool: give the message back at once (worker shutting down).
- reap(max_attempts) -> list[Reaped]: requeue or dead-letter expired leases.
- requeue_dead(job_id, priority) -> bool: a dead job goes back on the queue.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass

import redis
from huey.storage import RedisStorage

from mistudio.redis import keys
from mistudio.redis.connection import Client
from mistudio.redis.scripts import script


@dataclass(frozen=True)
class Lease:
    id: str
    queue: str
    job_id: str
    attempt: int
    deadline: float  # Redis TIME seconds
    message: bytes
    score: float


@dataclass(frozen=True)
class Reaped:
    lease_id: str
    job_id: str
    outcome: str  # "requeued" or "dead"
    attempts: int


class LeaseStorage(RedisStorage):
    redis_client = Client

    def __init__(self, name: str, *, lease_seconds: float = 60.0, **kwargs):
        kwargs.setdefault("read_timeout", 1)
        super().__init__(name, **kwargs)
        self.lease_seconds = float(lease_seconds)
        self.local = threading.local()  # the lease taken by this thread's last dequeue()
        q = self.name
        self.k_pending = keys.queue_pending(q)
        self.k_inflight = keys.queue_inflight(q)
        self.k_leases = keys.queue_leases(q)
        self.k_info = keys.queue_lease_info(q)
        self.k_attempts = keys.queue_attempts(q)
        self.k_dead = keys.queue_dead(q)
        self.k_notify = keys.queue_notify(q)
        assert self.k_pending == self.queue_key  # Huey's own layout: huey tools still see the queue
        self._enqueue = script(self.conn, "queue_enqueue")
        self._claim = script(self.conn, "queue_claim")
        self._renew = script(self.conn, "queue_renew")
        self._ack = script(self.conn, "queue_ack")
        self._release = script(self.conn, "queue_release")
        self._reap = script(self.conn, "queue_reap")
        self._requeue_dead = script(self.conn, "queue_requeue_dead")

    # --- Huey's BaseStorage -------------------------------------------------------

    def enqueue(self, data: bytes, priority: int | None = None) -> None:
        self._enqueue(keys=[self.k_pending, keys.queue_seq(), self.k_notify], args=[data, int(priority or 0)])

    def dequeue(self) -> bytes | None:
        """Claim under a lease (kept in self.local.lease for this thread); the caller must ack it."""
        lease = self.claim(worker_id=f"huey-{threading.get_ident()}")
        self.local.lease = lease
        return None if lease is None else lease.message

    def queue_size(self) -> int:
        return self.conn.zcard(self.k_pending)

    def enqueued_items(self, limit: int | None = None) -> list[bytes]:
        return self.conn.zrange(self.k_pending, 0, (limit - 1) if limit else -1)

    def flush_queue(self) -> None:
        self.conn.delete(self.k_pending, self.k_notify)

    # --- leases ----------------------------------------------------------------------

    def _claim_once(self, worker_id: str) -> Lease | None:
        lease_id = uuid.uuid4().hex
        res = self._claim(
            keys=[self.k_pending, self.k_inflight, self.k_leases, self.k_info, self.k_attempts],
            args=[self.lease_seconds, worker_id, lease_id],
        )
        if res is None:
            return None
        message, attempt, deadline, score = res
        job_id = ""
        try:
            job_id = json.loads(message).get("id") or ""
        except (ValueError, AttributeError):
            pass
        return Lease(lease_id, self.name, job_id, int(attempt), float(deadline), message, float(score))

    def claim(self, worker_id: str, block: bool = True) -> Lease | None:
        lease = self._claim_once(worker_id)
        if lease is None and block and self.blocking:
            # Sleep until an enqueue pushes a wake-up token (or read_timeout passes).
            try:
                self.conn.brpop(self.k_notify, timeout=self.read_timeout)
            except redis.exceptions.TimeoutError:
                return None
            lease = self._claim_once(worker_id)
        return lease

    def renew(self, lease: Lease) -> bool:
        return float(self._renew(keys=[self.k_leases], args=[lease.id, self.lease_seconds]) or 0) > 0

    def lease_valid(self, lease_id: str) -> bool:
        pipe = self.conn.pipeline(transaction=False)
        pipe.zscore(self.k_leases, lease_id)
        pipe.time()
        deadline, (secs, micros) = pipe.execute()
        return deadline is not None and float(deadline) > secs + micros / 1e6

    def ack(self, lease: Lease) -> bool:
        return bool(self._ack(keys=[self.k_inflight, self.k_leases, self.k_info, self.k_attempts], args=[lease.id, lease.job_id]))

    def release(self, lease: Lease) -> bool:
        return bool(
            self._release(keys=[self.k_pending, self.k_inflight, self.k_leases, self.k_info, self.k_notify], args=[lease.id])
        )

    def bury(self, lease: Lease) -> bool:
        """Ack and keep the message in the dead letters (a job that keeps crashing its process)."""
        pipe = self.conn.pipeline(transaction=True)
        pipe.hdel(self.k_inflight, lease.id)
        pipe.zrem(self.k_leases, lease.id)
        pipe.hdel(self.k_info, lease.id)
        pipe.hdel(self.k_attempts, lease.job_id)
        pipe.hset(self.k_dead, lease.job_id, lease.message)
        return bool(pipe.execute()[0])

    def reap(self, max_attempts: int, limit: int = 100) -> list[Reaped]:
        flat = self._reap(
            keys=[self.k_pending, self.k_inflight, self.k_leases, self.k_info, self.k_attempts, self.k_dead, self.k_notify],
            args=[max_attempts, limit],
        )
        out = []
        for i in range(0, len(flat), 4):
            lease_id, job_id, outcome, attempts = (v.decode() if isinstance(v, bytes) else v for v in flat[i : i + 4])
            out.append(Reaped(lease_id, job_id, outcome, int(attempts)))
        return out

    def requeue_dead(self, job_id: str, priority: int) -> bool:
        return bool(
            self._requeue_dead(
                keys=[self.k_dead, self.k_pending, keys.queue_seq(), self.k_attempts, self.k_notify], args=[job_id, priority]
            )
        )

    # --- sizes -----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        pipe = self.conn.pipeline(transaction=False)
        pipe.zcard(self.k_pending)
        pipe.zcard(self.schedule_key)
        pipe.zcard(self.k_leases)
        pipe.hlen(self.k_dead)
        queued, scheduled, inflight, dead = pipe.execute()
        return {"queued": queued, "scheduled": scheduled, "in_flight": inflight, "dead": dead}

    def dead_job_ids(self) -> list[str]:
        return [k.decode() if isinstance(k, bytes) else k for k in self.conn.hkeys(self.k_dead)]

    def inflight_leases(self) -> dict[str, dict]:
        return {
            (k.decode() if isinstance(k, bytes) else k): json.loads(v)
            for k, v in self.conn.hgetall(self.k_info).items()
        }
