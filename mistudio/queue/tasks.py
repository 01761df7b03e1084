"""The task registry: what a job kind runs and how its parameters are checked.

A task is a plain function `fn(job, **params) -> dict` (job: a JobContext). It is
registered with `@task("name", validate=...)`; `validate(params) -> params` runs in the
submitting process, before anything is queued, and raises InvalidInput for bad input.
`on_failure(job_id, params, error)` runs whenever the job ends failed or dead, whoever
records it (the task itself, its worker, the reaper): e.g. train_sae publishes its
`training.error` event there, so every failure path ends the event stream.
The modules that define tasks live in mistudio.tasks and are imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mistudio.errors import InvalidInput


@dataclass(frozen=True)
class TaskSpec:
    name: str
    fn: Callable[..., dict | None]
    validate: Callable[[dict], dict] | None
    id_prefix: str
    on_failure: Callable[[str, dict, str], None] | None = None


_TASKS: dict[str, TaskSpec] = {}


def task(name: str, *, validate: Callable[[dict], dict] | None = None, id_prefix: str = "job",
         on_failure: Callable[[str, dict, str], None] | None = None):
    def decorator(fn):
        if name in _TASKS and _TASKS[name].fn is not fn:
            raise ValueError(f"task {name!r} is registered twice")
        _TASKS[name] = TaskSpec(name, fn, validate, id_prefix, on_failure)
        return fn

    return decorator


def all_tasks() -> dict[str, TaskSpec]:
    import mistudio.tasks  # noqa: F401  (registers every task)

    return dict(_TASKS)


def get_task(name: str) -> TaskSpec:
    tasks = all_tasks()
    if name not in tasks:
        raise InvalidInput("task", f"unknown task {name!r}", f"use one of {', '.join(sorted(tasks))}")
    return tasks[name]
