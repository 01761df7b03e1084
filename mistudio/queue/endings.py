"""Ending a job: its final state in the record, then, for failed or dead, the task's
failure hook (TaskSpec.on_failure), whoever ends it: the task's own commit (run_job),
its worker (a crashed child, a time limit, an invalid message), or the reaper (every
attempt lost its worker). The hook runs only when this call moved the state, so once."""

from __future__ import annotations

import logging
import time

from mistudio.queue import records
from mistudio.tasks import all_tasks

logger = logging.getLogger("mistudio.queue")

FAILED = frozenset({"failed", "dead"})
HOOK_RETRIES = (0.25, 0.5, 1.0, 2.0, 4.0)  # seconds between tries while Redis is away


def finish(results, job_id: str, state: str, *, task: str | None = None, params: dict | None = None,
           **finish_args) -> bool:
    """records.finish(results, job_id, state, **finish_args), then the failure hook.
    task/params default to the record's (read only when a hook may run)."""
    if not records.finish(results, job_id, state, **finish_args):
        return False
    if state in FAILED:
        if task is None:
            record = records.get(results, job_id) or {}
            task, params = record.get("task"), record.get("params")
        run_failure_hook(task, job_id, params or {}, finish_args.get("error") or state)
    return True


def run_failure_hook(task: str | None, job_id: str, params: dict, error: str) -> None:
    spec = all_tasks().get(task or "")
    if spec is None or spec.on_failure is None:
        return
    for delay in (*HOOK_RETRIES, None):
        try:
            spec.on_failure(job_id, params, error)
            return
        except Exception as exc:
            if delay is None:
                logger.error("job %s: failure hook of %s failed: %s", job_id, task, exc)
                return
            time.sleep(delay)
