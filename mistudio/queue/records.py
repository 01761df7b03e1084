"""Job records: the one place notebooks, the CLI and widgets read a job's state.

A record is a hash in the results database: id, task, queue, priority, params (JSON),
state, attempts, worker, created/started/finished times, error; for a training also where its
last checkpoint is and why a delivery resumed or restarted (checkpoint_device, checkpoint_step,
checkpoint_store, resume_note: mistudio/run_location.py). Beside it, a progress
snapshot (JSON, TTL 1 h) and the result or error with traceback (JSON, TTL 24 h), as
the seed's Celery meta keys. A record stays until 24 h after its job ends.

A record's state follows its queue message (mistudio.queue.storage):

    queued ──start──► running ──finish──► succeeded | failed | cancelled | dead
      ▲                  │
      └──mark_queued─────┘  (its delivery was released or reaped; the next one starts it)
    queued ──finish──► cancelled | dead      retry: failed | cancelled | dead ──► queued

Every change is a compare-and-set script on the state and, while the job runs, on the
lease id of the delivery that changes it: a start refuses an expired lease, and only the
current delivery may requeue or finish a running job. So a late reaper or a stale worker
never makes the record say "queued" while a newer delivery runs, nor overwrites its outcome.
"""

from __future__ import annotations

import json
import time

import redis

from mistudio.redis import keys
from mistudio.redis.scripts import script

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "dead")
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "dead"})
ACTIVE = frozenset({"queued", "running"})
PROGRESS_TTL = 3600  # seconds, as the seed's celery-task-progress-*
RESULT_TTL = 86400  # seconds, as the seed's celery-task-meta-*

_INT_FIELDS = ("priority", "attempts", "checkpoint_step")
_FLOAT_FIELDS = ("created_at", "started_at", "finished_at", "time_limit", "updated_at")


def _decode(raw: dict) -> dict:
    record = dict(raw)
    for name in _INT_FIELDS:
        if record.get(name) not in (None, ""):
            record[name] = int(record[name])
    for name in _FLOAT_FIELDS:
        if record.get(name) not in (None, ""):
            record[name] = float(record[name])
        else:
            record[name] = None
    record["params"] = json.loads(record["params"]) if record.get("params") else {}
    # checkpoint_* and resume_note: where a training's last checkpoint is (mistudio/run_location.py)
    for name in ("worker", "error", "lease", "note", "checkpoint_device", "checkpoint_store", "resume_note"):
        record[name] = record.get(name) or None
    record["cancel_requested"] = record.get("cancel_requested") == "1"
    return record


def create(client: redis.Redis, job_id: str, task: str, queue: str, priority: int, params: dict, time_limit: float) -> dict:
    now = time.time()
    fields = {
        "id": job_id,
        "task": task,
        "queue": queue,
        "priority": priority,
        "params": json.dumps(params, separators=(",", ":")),
        "state": "queued",
        "attempts": 0,
        "worker": "",
        "lease": "",
        "created_at": now,
        "started_at": "",
        "finished_at": "",
        "updated_at": now,
        "time_limit": time_limit,
        "error": "",
        "note": "",
        "cancel_requested": "0",
    }
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.job(job_id), mapping=fields)
    pipe.zadd(keys.jobs_index(), {job_id: now})
    pipe.execute()
    return _decode({k: str(v) for k, v in fields.items()})


def get(client: redis.Redis, job_id: str) -> dict | None:
    raw = client.hgetall(keys.job(job_id))
    return _decode(raw) if raw else None


def update_if(client: redis.Redis, job_id: str, allowed: tuple[str, ...] | frozenset, ttl: int = 0, *,
              if_lease: str = "", **fields) -> bool:
    """Set fields if the record's state is in allowed (empty: any) and, when it is running, it
    runs under the lease if_lease (empty: any). ttl > 0 makes the record expire."""
    fields.setdefault("updated_at", time.time())
    args = [",".join(sorted(allowed)), int(ttl), if_lease]
    for name, value in fields.items():
        args += [name, "" if value is None else (json.dumps(value) if isinstance(value, (dict, list)) else str(value))]
    return bool(script(client, "job_update_if")(keys=[keys.job(job_id)], args=args))


def start(client: redis.Redis, job_id: str, *, worker: str, lease: str, attempt: int,
          deadline: float) -> tuple[str, dict | None]:
    """Mark a claimed job running, reading its record in the same round trip.
    Returns ("run", record), ("skip", {"state": final_state}), ("missing", None), or
    ("expired", None) when the lease's deadline (Redis time) passed before the start."""
    out = script(client, "job_start")(keys=[keys.job(job_id)], args=[worker, lease, attempt, time.time(), deadline])
    if out[0] == -1:
        return "missing", None
    if out[0] == -2:
        return "expired", None
    if out[0] == 0:
        return "skip", {"state": out[1]}
    flat = out[1:]
    return "run", _decode(dict(zip(flat[::2], flat[1::2])))


def mark_queued(client: redis.Redis, job_id: str, note: str, *, lease: str) -> bool:
    """Back on the queue after its delivery (lease) was released or reaped: only from running
    under that lease, so a newer delivery that already started keeps its "running"."""
    return update_if(client, job_id, ("running",), if_lease=lease, state="queued", worker="", lease="", note=note)


def finish(
    client: redis.Redis,
    job_id: str,
    state: str,
    *,
    result: dict | None = None,
    error: str | None = None,
    traceback: str | None = None,
    allowed: tuple[str, ...] | frozenset = ACTIVE,
    lease: str = "",
) -> bool:
    """Move a job to a final state, store its result/error (TTL 24 h) and wake waiters.
    lease: the delivery that ends it; a running job under another lease is left alone."""
    assert state in TERMINAL, state
    now = time.time()
    payload = {"state": state, "result": result, "error": error, "traceback": traceback, "finished_at": now}
    return bool(
        script(client, "job_finish")(
            keys=[keys.job(job_id), keys.job_result(job_id), keys.job_cancel(job_id)],
            args=[",".join(sorted(allowed)), state, json.dumps(payload, default=str), RESULT_TTL, now,
                  (error or "")[:2000], keys.job_finished_channel(), job_id, lease],
        )
    )


def set_progress(client: redis.Redis, job_id: str, data: dict) -> None:
    client.set(keys.job_progress(job_id), json.dumps(data, default=float), ex=PROGRESS_TTL)


def get_progress(client: redis.Redis, job_id: str) -> dict | None:
    raw = client.get(keys.job_progress(job_id))
    return json.loads(raw) if raw else None


def get_progress_many(client: redis.Redis, job_ids: list[str]) -> list[dict | None]:
    """Progress snapshots of several jobs in one round trip."""
    if not job_ids:
        return []
    return [json.loads(raw) if raw else None for raw in client.mget([keys.job_progress(j) for j in job_ids])]


def get_result(client: redis.Redis, job_id: str) -> dict | None:
    raw = client.get(keys.job_result(job_id))
    return json.loads(raw) if raw else None


def request_cancel(client: redis.Redis, job_id: str) -> bool:
    """Set the flag the running job's worker polls (it expires with the result TTL).
    False if the job is not running (it ended, or is queued: finish it instead)."""
    return bool(script(client, "job_request_cancel")(keys=[keys.job(job_id), keys.job_cancel(job_id)],
                                                      args=[RESULT_TTL]))


def stop_reason(client: redis.Redis, job_id: str, lease: str) -> str | None:
    """What a delivery running under lease must do, from its record in one read: "cancelled"
    (asked, or the record was cancelled), "lease_lost" (the record moved on: requeued,
    ended by another delivery, or running under another lease), or None (carry on, or this very
    delivery has just finished it)."""
    state, current, cancel = client.hmget(keys.job(job_id), "state", "lease", "cancel_requested")
    if cancel == "1" or state == "cancelled":
        return "cancelled"
    if current == lease and state in ("running", "succeeded", "failed"):
        return None  # ours: still running, or just finished by our own child (not a lost lease)
    return "lease_lost"


def list_records(client: redis.Redis, limit: int = 50, offset: int = 0) -> list[dict]:
    """Newest first. Index entries whose record has expired are pruned on the way."""
    ids = client.zrevrange(keys.jobs_index(), offset, offset + limit - 1)
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hgetall(keys.job(job_id))
    records, expired = [], []
    for job_id, raw in zip(ids, pipe.execute()):
        if raw:
            records.append(_decode(raw))
        else:
            expired.append(job_id)
    if expired:
        client.zrem(keys.jobs_index(), *expired)
    return records
