"""Which worker runs which job (the seed's job assignment tracking).

`job:{id}:assignment` (hash: job_id, worker_id, device, assigned_at, status, holder; 24 h TTL
as the seed) and `worker:{id}:jobs` (set of job ids). The worker's JobGuard writes them
shortly after a job starts (its keeper thread does, off the start path: a job can be
`running` a moment before its assignment appears) and removes them when the job ends; when
a worker dies its heartbeat lapses and `heartbeat.healthy_workers` removes what it left
(`forget_worker`).

Each delivery of a job writes under its own holder token: the first holder keeps the
assignment until it removes it, and removes only its own (Lua), so a stale delivery and
a newer one of the same job never overwrite or delete each other's.
"""

from __future__ import annotations

from mistudio.redis import keys
from mistudio.redis.scripts import script

TTL = 86400  # seconds: the seed's 24 h maximum


def assign(client, job_id: str, worker_id: str, device: str, *, status: str, holder: str,
           assigned_at: float) -> bool:
    """Write the assignment (or its new status). False: another holder has it; try again later."""
    return int(script(client, "assignment_set")(
        keys=[keys.job_assignment(job_id), keys.worker_jobs(worker_id)],
        args=[job_id, worker_id, device, status, holder, assigned_at, TTL],
    )) == 1


def unassign(client, job_id: str, worker_id: str, holder: str) -> bool:
    """Remove the assignment if it is this holder's. False: it was not there (or not ours)."""
    return int(script(client, "assignment_delete")(
        keys=[keys.job_assignment(job_id), keys.worker_jobs(worker_id)], args=[job_id, worker_id, holder],
    )) == 1


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
    # A job can have moved to another worker (redelivered) before this one's set was cleaned.
    return [{**data, "assigned_at": float(data["assigned_at"])} for data in pipe.execute()
            if data.get("worker_id") == worker_id]


def forget_worker(client, worker_id: str) -> list[str]:
    """A dead worker's assignments go (the reaper requeues its jobs through their leases)."""
    job_ids = list(client.smembers(keys.worker_jobs(worker_id)))
    pipe = client.pipeline(transaction=True)
    for job_id in job_ids:
        pipe.hget(keys.job_assignment(job_id), "worker_id")
    owners = pipe.execute() if job_ids else []
    # Check-then-delete is safe here: another delivery cannot take over an assignment that is
    # still the dead worker's (assignment_set refuses), so what we read is what we delete.
    pipe = client.pipeline(transaction=True)
    for job_id, owner in zip(job_ids, owners):
        if owner == worker_id:  # the job may already run elsewhere: keep that assignment
            pipe.delete(keys.job_assignment(job_id))
    pipe.delete(keys.worker_jobs(worker_id))
    pipe.execute()
    return job_ids
