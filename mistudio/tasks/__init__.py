"""The task catalogue: importing this package registers every task, then its lookups read them.

A task is one module here with one `@task(...)` registration (mistudio/queue/tasks.py says what
a spec holds), imported below; tests/test_task_spec.py fails for a module left out. Tasks may also
come from another installed package: each `mistudio.tasks` entry point names a module, imported
here after ours (`[project.entry-points."mistudio.tasks"] mytask = "mypkg.mytask"`).

This import is the one step that loads the tasks: jobs.submit and the queue's Huey apps (so every
worker and every CLI command) import it; nothing imports a task module otherwise.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from mistudio.errors import InvalidInput
from mistudio.queue.tasks import TaskSpec, registered
from mistudio.tasks import data, diagnostics, features, reference, steering, training  # noqa: F401  (each registers its tasks)

ENTRY_POINT_GROUP = "mistudio.tasks"


def _load_plugins() -> None:
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            importlib.import_module(entry.module)
        except InvalidInput:
            raise  # a spec's own error names the task, the field and the fix
        except Exception as exc:  # which package's plugin broke, not only its traceback
            raise ImportError(f"task module {entry.module!r} (entry point {entry.name!r} of "
                              f"{getattr(entry.dist, 'name', '?')}) failed to import: {exc}") from exc


_load_plugins()


def all_tasks() -> dict[str, TaskSpec]:
    return registered()


def get_task(name: str) -> TaskSpec:
    tasks = registered()
    if name not in tasks:
        raise InvalidInput("task", f"unknown task {name!r}", f"use one of {', '.join(sorted(tasks))}")
    return tasks[name]


def table() -> list[dict]:
    """One row per task, as `mistudio tasks` and ARCHITECTURE.md show it."""
    return [{"task": s.name, "queue": s.queue, "priority": s.priority, "rate tier": s.rate_tier or "-",
             "slot": s.slot or "-", "channel": s.channel.__name__ if s.channel else "-",
             "events": ", ".join(s.events) or "-", "description": s.description}
            for s in sorted(registered().values(), key=lambda s: (-s.priority, s.name))]


def markdown_table() -> str:
    rows = table()
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
