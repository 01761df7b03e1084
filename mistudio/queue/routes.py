"""Which queue runs which task, at which priority: the one routing table.

The seed's CELERY_TASK_ROUTES, for Huey: one Huey app (and consumer process) per
queue kind, each with its own worker count.
"""

from __future__ import annotations

from dataclasses import dataclass

from mistudio.errors import InvalidInput


@dataclass(frozen=True)
class QueueSpec:
    name: str
    workers: int  # worker threads in the queue's consumer process
    isolate: bool  # run each task in a spawned child process (CUDA cannot survive fork)
    description: str


@dataclass(frozen=True)
class Route:
    queue: str
    priority: int  # higher runs first; FIFO within a priority


QUEUES: dict[str, QueueSpec] = {
    "gpu": QueueSpec("gpu", workers=1, isolate=True, description="SAE training and feature extraction"),
    "io": QueueSpec("io", workers=2, isolate=False, description="model and dataset downloads"),
    "cpu": QueueSpec("cpu", workers=1, isolate=False, description="dataset processing"),
}

ROUTES: dict[str, Route] = {
    "train_sae": Route("gpu", 10),
    "extract_features": Route("gpu", 7),
    "download_model": Route("io", 5),
    "download_dataset": Route("io", 5),
    "process_dataset": Route("cpu", 3),
    # Diagnostics: small real tasks to check the queue end to end (any queue may be named).
    "diagnostics.sleep": Route("cpu", 1),
    "diagnostics.echo": Route("cpu", 1),
    "diagnostics.fail": Route("cpu", 1),
}

MAX_PRIORITY = 255


def queue_spec(name: str) -> QueueSpec:
    try:
        return QUEUES[name]
    except KeyError:
        raise InvalidInput("queue", f"unknown queue {name!r}", f"use one of {', '.join(QUEUES)}") from None


def route(task: str, queue: str | None = None, priority: int | None = None) -> Route:
    """The route for task, with optional overrides checked."""
    if task not in ROUTES:
        raise InvalidInput("task", f"unknown task {task!r}", f"use one of {', '.join(sorted(ROUTES))}")
    default = ROUTES[task]
    queue = default.queue if queue is None else queue_spec(queue).name
    priority = default.priority if priority is None else priority
    if not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
        raise InvalidInput("priority", f"must be an integer 0..{MAX_PRIORITY}, got {priority!r}", "pass e.g. priority=5")
    return Route(queue, priority)
