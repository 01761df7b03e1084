"""Which worker runs which job (the seed's job assignment tracking).

`job:{id}:assignment` (hash: worker_id, device, assigned_at, status; 24 h TTL as the seed)
and `worker:{id}:jobs` (set of job ids). The worker writes them when a job starts and
removes them when it ends; when a worker dies its heartbeat lapses and
`heartbeat.healthy_workers` removes what it left (`forget_worker`).
"""

from __future__ import annotations

import time

from mistudio.redis import keys

TTL = 86400  # seconds: the seed's 24 h maximum


def assign(client, job_id: str, worker_id: str, device: str, status: str = "running") -> None:
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.job_assignment(job_id), mapping={
        "job_id": job_id, "worker_id": worker_id, "device": device, "assigned_at": time.time(), "status": status,
    })
    pipe.expire(keys.job_assignment(job_id), TTL)
    pipe.sadd(keys.worker_jobs(worker_id), job_id)
    pipe.expire(keys.worker_jobs(worker_id), TTL)
    pipe.execute()


def set_status(client, job_id: str, status: str) -> None:
    client.hset(keys.job_assignment(job_id), "status", status)


def unassign(client, job_id: str, worker_id: str) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.delete(keys.job_assignment(job_id))
    pipe.srem(keys.worker_jobs(worker_id), job_id)
    pipe.execute()


def get(client, job_id: str) -> dict | None:
    data = client.hgetall(keys.job_assignment(job_id))
    if not data:
        return None
    data["assigned_at"] = float(data["assigned_at"])
    return data


def worker_jobs(client, worker_id: str) -> list[dict]:
    """The assignments of one worker's jobs (the seed's get_worker_jobs), in one round trip."""
    job_ids = sorted(client.smembers(keys.worker_jobs(worker_id)))
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hgetall(keys.job_assignment(job_id))
    return [{**data, "assigned_at": float(data["assigned_at"])} for data in pipe.execute() if data]


def forget_worker(client, worker_id: str) -> list[str]:
    """A dead worker's assignments go (the reaper requeues its jobs through their leases)."""
    job_ids = list(client.smembers(keys.worker_jobs(worker_id)))
    pipe = client.pipeline(transaction=True)
    for job_id in job_ids:
        pipe.hget(keys.job_assignment(job_id), "worker_id")
    owners = pipe.execute() if job_ids else []
    pipe = client.pipeline(transaction=True)
    for job_id, owner in zip(job_ids, owners):
        if owner == worker_id:  # the job may already run elsewhere: keep that assignment
            pipe.delete(keys.job_assignment(job_id))
    pipe.delete(keys.worker_jobs(worker_id))
    pipe.execute()
    return job_ids
