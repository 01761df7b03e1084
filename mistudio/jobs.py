"""The job API for notebooks and the CLI: submit, follow, wait, cancel, retry.

    from mistudio import jobs
    job = jobs.submit("diagnostics.sleep", {"seconds": 2})
    job.status(); job.progress(); job.result(timeout=60); job.cancel(); job.retry()
    jobs.list_jobs()

Input is checked before anything is queued (unknown task, bad parameters, parameters
that are not JSON): the error names the field and the fix. A job accepted is never
lost: it is in Redis (AOF on) until a worker acknowledges it.
"""

from __future__ import annotations

import math
import time
import uuid

import redis

from mistudio import limits
from mistudio.errors import InvalidInput, MistudioError
from mistudio.queue import records
from mistudio.queue.apps import huey_app, make_task
from mistudio.queue.ids import check_job_id
from mistudio.queue.routes import route
from mistudio.redis import keys
from mistudio.redis.connection import RedisFull, get_client, is_out_of_memory
from mistudio.settings import Settings, get_settings
from mistudio.tasks import get_task
from mistudio.validation import check_params, preview


class JobNotFound(MistudioError, KeyError):
    def __init__(self, job_id: str):
        super().__init__(f"no job {preview(job_id)} (job records are kept until 24 h after the job ends)")

    def __str__(self):  # KeyError would quote the message
        return self.args[0]


class JobFailed(MistudioError):
    """A job ended failed, cancelled or dead; carries the error and the traceback."""

    def __init__(self, job_id: str, state: str, error: str | None, traceback: str | None = None):
        self.job_id, self.state, self.error, self.traceback = job_id, state, error, traceback
        super().__init__(f"job {job_id} {state}: {error or 'no error recorded'}")


class Job:
    """A handle on one job. Cheap: every call reads the record from Redis."""

    def __init__(self, job_id: str, settings: Settings | None = None):
        self.id = job_id
        self.settings = settings or get_settings()
        self._results = get_client("results", settings=self.settings)

    def __repr__(self) -> str:
        try:
            return f"<Job {self.id} {self.status()}>"
        except MistudioError:
            return f"<Job {self.id}>"

    def _ipython_display_(self):
        """A view that fits the job's kind: a training's TrainingMonitor, else its progress."""
        from mistudio.widgets.job_view import view_for  # why: ipywidgets is heavy, and widgets import jobs

        view_for(self)._ipython_display_()

    def then(self, fn):
        """In a notebook: fn(job) runs when the job ends, its output shown in this cell; returns at once."""
        from mistudio.widgets.when_done import when_done  # why: IPython is heavy (a notebook-only path)

        return when_done(self, fn)

    def record(self) -> dict:
        record = records.get(self._results, self.id)
        if record is None:
            raise JobNotFound(self.id)
        return record

    def channel(self) -> str | None:
        """The event channel this job publishes on, from its task's spec (None: it publishes none)."""
        record = self.record()
        return get_task(record["task"]).channel_for(self.id, record["params"] or {})

    def status(self) -> str:
        return self.record()["state"]

    def progress(self) -> dict | None:
        return records.get_progress(self._results, self.id)

    def stored(self) -> dict | None:
        """The stored outcome {state, result, error, traceback, finished_at}, once the job ended."""
        return records.get_result(self._results, self.id)

    def wait(self, timeout: float | None = None) -> dict:
        """Block until the job ends (or timeout, raising TimeoutError); return its record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02
        while True:
            record = self.record()
            if record["state"] in records.TERMINAL:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} is still {record['state']} after {timeout} s")
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 1.5, 0.5)

    def result(self, timeout: float | None = None) -> dict | None:
        """Wait for the job; its result if it succeeded, else raise JobFailed."""
        record = self.wait(timeout)
        stored = records.get_result(self._results, self.id) or {}
        if record["state"] != "succeeded":
            raise JobFailed(self.id, record["state"], record.get("error") or stored.get("error"), stored.get("traceback"))
        return stored.get("result")

    def cancel(self) -> bool:
        """Cancel: a queued job never runs; a running one is stopped. False if it had already ended."""
        for _ in range(10):  # each try acts on the state it read; a job moving meanwhile is tried again
            state = self.record()["state"]
            if state in records.TERMINAL:
                return False
            if state == "queued" and records.finish(
                self._results, self.id, "cancelled", error="cancelled by user before it started", allowed=("queued",)
            ):
                return True
            if state == "running" and records.request_cancel(self._results, self.id):
                return True
        return False

    def retry(self) -> "Job":
        """Run a failed, cancelled or dead job again, under the same id (training resumes from its checkpoint)."""
        record = self.record()
        state = record["state"]
        if state not in ("failed", "cancelled", "dead"):
            raise InvalidInput("job", f"{self.id} is {state}", "only failed, cancelled or dead jobs can be retried")
        reset = dict(state="queued", error="", note=f"retried after {state}", finished_at="", worker="", cancel_requested="0")
        if not records.update_if(self._results, self.id, (state,), **reset):
            raise InvalidInput("job", f"{self.id} changed state meanwhile", "look at job.status() and try again")
        self._results.delete(keys.job_result(self.id), keys.job_cancel(self.id))
        app = huey_app(record["queue"], self.settings)
        if not (state == "dead" and app.storage.requeue_dead(self.id, record["priority"])):
            app.enqueue(make_task(app, record["task"], self.id, record["params"], record["priority"]))
        return self


def submit(
    task: str,
    params: dict | None = None,
    *,
    queue: str | None = None,
    priority: int | None = None,
    job_id: str | None = None,
    time_limit: float | None = None,
    settings: Settings | None = None,
) -> Job:
    """Check the input, record the job, queue it; return its handle."""
    settings = settings or get_settings()
    spec = get_task(task)
    where = route(spec.route, queue, priority)
    params = check_params(spec, params)  # the worker checks the message it claims again (queue/apps.run_job)
    if time_limit is None:
        time_limit = settings.task_time_limit
    if (not isinstance(time_limit, (int, float)) or isinstance(time_limit, bool) or not math.isfinite(time_limit)
            or time_limit <= 0):
        raise InvalidInput("time_limit", f"must be a positive number of seconds, got {preview(time_limit)}", "e.g. 3600")
    results = get_client("results", settings=settings)
    if job_id is None:
        job_id = f"{spec.id_prefix}_{uuid.uuid4().hex[:12]}"
    elif records.get(results, check_job_id(job_id)) is not None:
        raise InvalidInput("job_id", f"a job {job_id!r} already exists", "pick another id, or retry that job")

    # Rate limits (API tier + the task's tier): raises limits.RateLimited, and nothing is queued.
    decision = limits.check_submit(task, settings=settings)
    try:
        _record_and_enqueue(results, job_id, task, where, params, float(time_limit), settings)
    except Exception as exc:
        try:  # not queued: the request gives its rate-limit slot back
            limits.refund(decision, settings=settings)
        except redis.exceptions.RedisError:
            pass  # Redis is gone: the slot lapses with its window
        if is_out_of_memory(exc):
            raise RedisFull.measured(results, f"job {job_id} ({task}) was not queued") from None
        raise
    return Job(job_id, settings)


def _record_and_enqueue(results, job_id: str, task: str, where, params: dict, time_limit: float,
                        settings: Settings) -> None:
    """The job record, then its queue message; at maxmemory (noeviction) neither is left behind."""
    try:
        records.create(results, job_id, task, where.queue, where.priority, params, time_limit)
        app = huey_app(where.queue, settings)
        app.enqueue(make_task(app, task, job_id, params, where.priority))
    except Exception as exc:
        if is_out_of_memory(exc):  # DEL and ZREM free memory: Redis takes them when full
            results.delete(keys.job(job_id))
            results.zrem(keys.jobs_index(), job_id)
        elif records.get(results, job_id) is not None:
            records.finish(results, job_id, "failed", error=f"could not be queued: {exc}")
        raise


def get_job(job_id: str, settings: Settings | None = None) -> Job:
    job = Job(job_id, settings)
    job.record()  # raises JobNotFound
    return job


def list_jobs(limit: int = 50, *, state: str | None = None, task: str | None = None,
              settings: Settings | None = None) -> list[dict]:
    """Job records, newest first, with their progress snapshot."""
    settings = settings or get_settings()
    results = get_client("results", settings=settings)
    out = []
    offset = 0
    while len(out) < limit:
        batch = records.list_records(results, limit=max(limit, 50), offset=offset)
        if not batch:
            break
        offset += len(batch)
        out += [r for r in batch if (state is None or r["state"] == state) and (task is None or r["task"] == task)]
    out = out[:limit]
    for record, progress in zip(out, records.get_progress_many(results, [r["id"] for r in out])):
        record["progress"] = progress
    return out
