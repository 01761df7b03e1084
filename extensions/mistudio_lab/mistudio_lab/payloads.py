"""The JSON the REST API answers with, built from the readers miStudio already has
(`mistudio.jobs`, `mistudio.lifecycle.status`): the shapes of the contract in README.md.

Blocking (Redis round trips): the handlers call these off the event loop.
"""

from __future__ import annotations

from mistudio import jobs, lifecycle
from mistudio.coord import assignments
from mistudio.coord.heartbeat import healthy_workers
from mistudio.errors import MistudioError
from mistudio.events import TrainingProgress, progress_of
from mistudio.redis.connection import get_client
from mistudio.tasks import get_task


def _fraction(progress: dict | None, state: str) -> float | None:
    if state == "succeeded":
        return 1.0  # the last snapshot is throttled: it lags the end
    value = progress_of(progress)
    if value is None:  # a task writing its own snapshot (the diagnostics' sleep)
        fraction = (progress or {}).get("fraction")
        return min(1.0, max(0.0, float(fraction))) if isinstance(fraction, (int, float)) else None
    return value.position().fraction


def _summary(progress: dict | None) -> str | None:
    """A few words on where a job is: 'training 500/977', 'caching activations', ..."""
    value = progress_of(progress)
    if value is None:
        return None
    if isinstance(value, TrainingProgress) and value.phase in (None, "training") and value.total_steps:
        return f"step {value.step}/{value.total_steps}"
    position = value.position()
    if position.phase and position.total:
        return f"{position.phase} {position.done:g}/{position.total:g}" + (f" {position.unit}" if position.unit else "")
    return position.phase


def _channel(record: dict) -> str | None:
    try:
        return get_task(record["task"]).channel_for(record["id"], record.get("params") or {})
    except MistudioError:  # a task this server does not know (a newer worker's plugin)
        return None


def job(record: dict, progress: dict | None, devices: dict[str, str]) -> dict:
    """One job record as the API's job object (devices: worker id -> its device)."""
    state = record["state"]
    return {
        "id": record["id"], "task": record["task"], "queue": record.get("queue"), "state": state,
        "attempts": record.get("attempts") or 0, "worker": record.get("worker"),
        "device": devices.get(record.get("worker") or "") or None,
        "progress": _fraction(progress, state), "created_at": record.get("created_at"),
        "updated_at": record.get("updated_at"), "channel": _channel(record), "error": record.get("error"),
        "summary": _summary(progress), "note": record.get("note"),
    }


def worker(heartbeat: dict, assigned: list[dict]) -> dict:
    """A heartbeat (every 10 s) and the worker's job assignments (written as a job starts: busy now)."""
    jobs_now = sorted({a["job_id"] for a in assigned} | set(heartbeat.get("active_jobs") or []))
    return {
        "id": heartbeat["worker_id"], "device": heartbeat.get("device"), "host": heartbeat.get("host"),
        "heartbeat_age_s": round(float(heartbeat.get("age", 0.0)), 1),
        "queues": [heartbeat["queue"]] if heartbeat.get("queue") else [],
        "busy": bool(jobs_now), "jobs": jobs_now,
        "leader": bool(heartbeat.get("leader")),
    }


def _devices(heartbeats: list[dict] | None = None) -> dict[str, str]:
    """Worker id -> device, of the live workers (a finished job's worker may be gone: no device)."""
    if heartbeats is None:
        heartbeats = healthy_workers(get_client("locks"))
    return {w["worker_id"]: w.get("device") for w in heartbeats}


def job_list(*, state: str | None = None, task: str | None = None, limit: int = 50,
             devices: dict[str, str] | None = None) -> list[dict]:
    devices = _devices() if devices is None else devices
    return [job(r, r.get("progress"), devices) for r in jobs.list_jobs(limit, state=state, task=task)]


def one_job(job_id: str) -> dict:
    """Raises jobs.JobNotFound."""
    handle = jobs.get_job(job_id)
    return job(handle.record(), handle.progress(), _devices())


def overview(*, jobs_limit: int | None = 50) -> dict:
    """Jobs (unless jobs_limit is None), workers, the leader, current alerts, queue depths:
    one status read (`mistudio status`'s) for the sidebar's whole refresh."""
    status = lifecycle.status()
    locks = get_client("locks")
    out = {
        "workers": [worker(w, assignments.worker_jobs(locks, w["worker_id"])) for w in status["workers"]],
        "leader": status.get("leader"),
        "alerts": status.get("alerts") or [],
        "queues": [{"name": name, **{k: counts.get(k) for k in ("queued", "in_flight", "scheduled", "dead", "threads")}}
                   for name, counts in status["queues"].items()],
        "redis": {k: status["redis"].get(k) for k in ("address", "version", "used_memory", "maxmemory",
                                                        "connected_clients")},
        "time": status["time"],
    }
    if jobs_limit is not None:
        out["jobs"] = job_list(limit=jobs_limit, devices=_devices(status["workers"]))
    return out
