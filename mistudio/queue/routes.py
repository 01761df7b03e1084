"""The queues, and a job's route (queue, priority): the seed's CELERY_TASK_ROUTES, for Huey.

One Huey app (and consumer process) per queue kind, each with its own worker count. A task's
default route is in its spec (`@task(queue=..., priority=...)`, mistudio/queue/tasks.py);
`route()` applies a submit's overrides to it, checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from mistudio.errors import InvalidInput


@dataclass(frozen=True)
class QueueSpec:
    name: str
    workers: int  # worker threads in the queue's consumer process
    isolate: bool  # run each task in a spawned child process (CUDA cannot survive fork)


@dataclass(frozen=True)
class Route:
    queue: str
    priority: int  # higher runs first; FIFO within a priority


QUEUES: dict[str, QueueSpec] = {
    # Which tasks run on each is in their specs (`mistudio tasks`).
    "gpu": QueueSpec("gpu", workers=1, isolate=True),
    "io": QueueSpec("io", workers=2, isolate=False),
    "cpu": QueueSpec("cpu", workers=1, isolate=False),
}

MAX_PRIORITY = 255


def queue_spec(name: str) -> QueueSpec:
    try:
        return QUEUES[name]
    except KeyError:
        raise InvalidInput("queue", f"unknown queue {name!r}", f"use one of {', '.join(QUEUES)}") from None


def route(default: Route, queue: str | None = None, priority: int | None = None) -> Route:
    """A task's default route (TaskSpec.route) with a submit's overrides checked."""
    queue = default.queue if queue is None else queue_spec(queue).name
    priority = default.priority if priority is None else priority
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= MAX_PRIORITY:
        raise InvalidInput("priority", f"must be an integer 0..{MAX_PRIORITY}, got {priority!r}", "pass e.g. priority=5")
    return Route(queue, priority)
