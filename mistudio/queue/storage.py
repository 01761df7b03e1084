"""Huey storage with leases: at-least-once delivery on Redis.

Huey's Redis storages pop a message and forget it, so a worker that dies mid-task
loses the task. This storage claims a message into an in-flight hash under a lease
(one Lua script: pop, record, deadline from Redis TIME, count the attempt). The
worker renews the lease while the task runs and acknowledges it after; a reaper
requeues expired leases and dead-letters a job after max_attempts deliveries.

The picture: every key of a queue Q (as mistudio/redis/keys.py names it; all in the queue DB),
then each state of a message and the script (mistudio/redis/lua/) that moves it: one script per
arrow, so each transition is atomic.

    key                   type    holds                                               state
    queue_pending(Q)      ZSET    message -> -priority * 2^32 + seq                   PENDING
    queue_seq()           STRING  the seq counter: FIFO within a priority (all queues)
    queue_notify(Q)       LIST    wake-up tokens a claim blocks on (BRPOP), <= 64
    queue_inflight(Q)     HASH    lease_id -> message                                 IN FLIGHT
    queue_leases(Q)       ZSET    lease_id -> deadline (Redis TIME seconds)           IN FLIGHT
    queue_lease_info(Q)   HASH    lease_id -> JSON {job_id, counter, worker, score, claimed}
    queue_attempts(Q)     HASH    counter (job id, or '#' + sha1 of the message) -> deliveries
    queue_dead(Q)         HASH    dead key (job id, else unique per message) -> message   DEAD
    queue_dead_info(Q)    HASH    dead key -> JSON {reason, job_id, at}               DEAD
    queue_schedule(Q)     ZSET    Huey's schedule (ETA tasks): only counted, miStudio schedules nothing

                                         ┌─renew─┐  (a new deadline)
                                         ▼       │
    (submit) ─enqueue─► PENDING ─claim─► IN FLIGHT ─ack─► (gone)
                         ▲   ▲               │
                         │   └─release, reap─┤ (attempts < max)
                         │                   │
                         └──requeue_dead── DEAD ◄─reap (attempts >= max), bury

    enqueue       queue_enqueue.lua       ZADD pending (score from INCR seq), wake a claimer
    claim         queue_claim.lua         ZPOPMIN pending; inflight, leases (deadline), lease_info; attempts + 1
    renew         queue_renew.lua         leases: a new deadline, only if the lease is held and not past it
    ack           queue_ack.lua           drop inflight, leases, lease_info and the attempts count: the job ended
    release       queue_release.lua       inflight -> pending at its old score, wake a claimer (worker stopping)
    reap          queue_reap.lua          expired leases: -> pending (attempts < max), else -> dead + dead_info
    bury          queue_bury.lua          inflight -> dead + dead_info with the reason; attempts dropped
    requeue_dead  queue_requeue_dead.lua  dead -> pending (a fresh seq), attempts and dead_info dropped

- claim: attempt + 1, a lease with a deadline (Redis TIME);
- ack: the job ended, in any final state;
- release: the worker stops (SIGTERM/SIGINT), its child crashed, or a commit could not
  be proven under the lease (the job comes back at once instead of after the deadline);
- reap: the deadline passed (the worker died or hung);
- bury: undecodable, an invalid job id or task, or it killed its process every attempt;
- requeue_dead: `mistudio retry` of a dead job.

Attempts are counted per job id, or per message digest for a message without one, so
every message reaches the dead letters; each dead letter keeps its reason
(keys.queue_dead_info). A renewal past the deadline is refused: an expired lease is
lost even before the reaper has moved it.

Contract of each method (beyond Huey's BaseStorage):
- enqueue(data, priority): add a message; higher priority first, FIFO within one.
- claim(worker_id) -> Lease | None: take the next message under a lease; blocks up
  to read_timeout when the queue is empty.
- renew(lease) -> bool: extend the lease; False means it was lost: stop, commit nothing.
- lease_valid(lease_id) -> bool: the lease exists and its deadline has not passed
  (raises when Redis cannot be reached: that proves nothing either way).
- ack(lease) -> bool: the job ended; False if the lease had already been lost.
- release(lease) -> bool: give the message back at once (worker shutting down).
- bury(lease, reason) -> bool: move it to the dead letters with the reason.
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

from mistudio.queue.ids import is_valid_job_id
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
        self.k_dead_info = keys.queue_dead_info(q)
        self.k_notify = keys.queue_notify(q)
        self.k_schedule = keys.queue_schedule(q)
        # Huey's own layout: huey tools still see the queue (and its schedule)
        assert (self.k_pending, self.k_schedule) == (self.queue_key, self.schedule_key)
        self._enqueue = script(self.conn, "queue_enqueue")
        self._claim = script(self.conn, "queue_claim")
        self._renew = script(self.conn, "queue_renew")
        self._ack = script(self.conn, "queue_ack")
        self._release = script(self.conn, "queue_release")
        self._bury = script(self.conn, "queue_bury")
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
        return Lease(lease_id, self.name, _message_id(message), int(attempt), float(deadline), message, float(score))

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
        return bool(self._ack(keys=[self.k_inflight, self.k_leases, self.k_info, self.k_attempts], args=[lease.id]))

    def release(self, lease: Lease) -> bool:
        return bool(
            self._release(keys=[self.k_pending, self.k_inflight, self.k_leases, self.k_info, self.k_notify], args=[lease.id])
        )

    def bury(self, lease: Lease, reason: str) -> bool:
        """Move the message to the dead letters with reason (it never runs again by itself).
        Keyed by its job id; a message without a valid id gets a key of its own."""
        key = lease.job_id if is_valid_job_id(lease.job_id) else f"?{lease.id}"
        return bool(self._bury(
            keys=[self.k_inflight, self.k_leases, self.k_info, self.k_attempts, self.k_dead, self.k_dead_info],
            args=[lease.id, key, reason, lease.job_id],
        ))

    def reap(self, max_attempts: int, limit: int = 100) -> list[Reaped]:
        flat = self._reap(
            keys=[self.k_pending, self.k_inflight, self.k_leases, self.k_info, self.k_attempts, self.k_dead, self.k_notify,
                  self.k_dead_info],
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
                keys=[self.k_dead, self.k_pending, keys.queue_seq(), self.k_attempts, self.k_notify, self.k_dead_info],
                args=[job_id, priority],
            )
        )

    # --- sizes -----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        pipe = self.conn.pipeline(transaction=False)
        pipe.zcard(self.k_pending)
        pipe.zcard(self.k_schedule)
        pipe.zcard(self.k_leases)
        pipe.hlen(self.k_dead)
        queued, scheduled, inflight, dead = pipe.execute()
        return {"queued": queued, "scheduled": scheduled, "in_flight": inflight, "dead": dead}

    def dead_job_ids(self) -> list[str]:
        return [k.decode() if isinstance(k, bytes) else k for k in self.conn.hkeys(self.k_dead)]

    def dead_letters(self) -> dict[str, dict]:
        """key -> {message (bytes), reason, job_id, at} for every dead letter."""
        pipe = self.conn.pipeline(transaction=False)
        pipe.hgetall(self.k_dead)
        pipe.hgetall(self.k_dead_info)
        messages, infos = pipe.execute()
        out = {}
        for key, message in messages.items():
            info = json.loads(infos.get(key) or "{}")
            out[key.decode() if isinstance(key, bytes) else key] = {"message": message, "reason": info.get("reason"),
                                                                     "job_id": info.get("job_id"), "at": info.get("at")}
        return out


def _message_id(message: bytes) -> str:
    """The message's top-level string "id" (what the claim script counts by), else ""."""
    try:
        decoded = json.loads(message)
    except ValueError:  # includes bad UTF-8
        return ""
    value = decoded.get("id") if isinstance(decoded, dict) else None
    return value if isinstance(value, str) else ""
