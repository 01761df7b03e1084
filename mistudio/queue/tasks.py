"""A task is one spec: everything miStudio knows about a job kind, in its `@task(...)` line.

    @task("train_sae", queue="gpu", priority=10, rate_tier="training_starts", slot="trainings",
          channel=keys.training_channel, events=("training.progress", ...), validate=..., id_prefix="tr",
          description="train an SAE on a model's activations")
    def train_sae(job, **config) -> dict: ...

A task is a plain function `fn(job, **params) -> dict` (job: a JobContext). `validate(params)
-> params` runs in the submitting process, before anything is queued, and raises InvalidInput
for bad input. `on_failure(job_id, params, error)` runs whenever the job ends failed or dead,
whoever records it (the task itself, its worker, the reaper): e.g. train_sae publishes its
`training.error` event there, so every failure path ends the event stream.

What is derived from the specs, never written down twice: the route (queue, priority) jobs.submit
uses, the rate tier limits.check_submit counts a submit in, the concurrency slot the worker holds
while the job runs, whether the job runs in a child process (its queue's `isolate`), the job's
event channel, and the task table in ARCHITECTURE.md (`mistudio tasks` prints it).

This module is the registry only and imports no task: the task modules (mistudio/tasks/) import
it to register. Importing `mistudio.tasks` loads them all; its `all_tasks()` and `get_task()`
read the registry once it is complete. A registration is checked when its module is imported,
so a spec naming an unknown queue, rate tier, slot, channel or event type fails at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from mistudio import limits_config
from mistudio.errors import InvalidInput
from mistudio.events.types import EVENT_TYPES
from mistudio.queue.ids import is_valid_job_id
from mistudio.queue.routes import MAX_PRIORITY, QUEUES, Route
from mistudio.redis import keys

_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")  # "train_sae", "diagnostics.sleep"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    fn: Callable[..., dict | None]
    queue: str  # a routes.QUEUES name
    priority: int  # higher runs first; FIFO within a priority
    description: str  # one line, for `mistudio tasks` and the docs
    validate: Callable[[dict], dict] | None = None
    id_prefix: str = "job"  # job ids are f"{id_prefix}_{12 hex digits}"
    on_failure: Callable[[str, dict, str], None] | None = None
    rate_tier: str | None = None  # counted at submit besides the API tier (limits_config.RATE_TIERS)
    slot: str | None = None  # held per device while the job runs (limits_config.CONCURRENCY)
    channel: Callable[[str], str] | None = None  # a keys.py channel function
    channel_param: str | None = None  # the parameter naming the channel (None, or unset: the job id)
    events: tuple[str, ...] = ()  # the event types published on the channel (events.types names)

    @property
    def route(self) -> Route:
        return Route(self.queue, self.priority)

    @property
    def isolated(self) -> bool:
        """Runs in a spawned child process: its queue's, since the worker isolates a whole queue."""
        return QUEUES[self.queue].isolate

    def channel_for(self, job_id: str, params: dict) -> str | None:
        """The channel a job of this task publishes on (None: it publishes none)."""
        if self.channel is None:
            return None
        return self.channel((params.get(self.channel_param) if self.channel_param else None) or job_id)


_TASKS: dict[str, TaskSpec] = {}


def task(name: str, *, queue: str, priority: int, description: str, validate: Callable[[dict], dict] | None = None,
         id_prefix: str = "job", on_failure: Callable[[str, dict, str], None] | None = None,
         rate_tier: str | None = None, slot: str | None = None, channel: Callable[[str], str] | None = None,
         channel_param: str | None = None, events: tuple[str, ...] = ()):
    """Register the decorated function as task `name` (checked now: see check()); the function
    is returned as it was, with its spec as `fn.task_spec`."""

    def decorator(fn):
        spec = TaskSpec(name, fn, queue, priority, description, validate, id_prefix, on_failure, rate_tier, slot,
                        channel, channel_param, tuple(events))
        check(spec)
        known = _TASKS.get(name)
        if known is not None and known.fn is not fn:
            raise InvalidInput("task", f"{name!r} is registered twice ({_where(known.fn)} and {_where(fn)})",
                               "give one of them another name")
        _TASKS[name] = spec
        fn.task_spec = spec  # the body may read its own spec (e.g. its channel_for)
        return fn

    return decorator


def check(spec: TaskSpec) -> None:
    """Every field of a spec, with an error naming the task, the field and the fix."""

    def bad(field: str, problem: str, fix: str):
        raise InvalidInput(f"task {spec.name!r}: {field}", problem, fix)

    if not isinstance(spec.name, str) or not _NAME.fullmatch(spec.name):
        bad("name", f"{spec.name!r} is not a task name", "use lower-case words with '_', dotted: e.g. 'toy.count'")
    if not callable(spec.fn):
        bad("fn", "is not callable", "decorate a function fn(job, **params)")
    if spec.queue not in QUEUES:
        bad("queue", f"unknown queue {spec.queue!r}", f"use one of {', '.join(QUEUES)}")
    if not isinstance(spec.priority, int) or isinstance(spec.priority, bool) or not 0 <= spec.priority <= MAX_PRIORITY:
        bad("priority", f"must be an integer 0..{MAX_PRIORITY}, got {spec.priority!r}", "e.g. priority=5")
    if not isinstance(spec.description, str) or not spec.description.strip() or "\n" in spec.description:
        bad("description", "must be one non-empty line", "say in a few words what the task does")
    for field in ("validate", "on_failure"):
        if getattr(spec, field) is not None and not callable(getattr(spec, field)):
            bad(field, "is not callable", f"pass a function, or leave {field} out")
    if not isinstance(spec.id_prefix, str) or not is_valid_job_id(f"{spec.id_prefix}_{'0' * 12}"):
        bad("id_prefix", f"{spec.id_prefix!r} cannot start a job id", "use a few letters, e.g. id_prefix='toy'")
    if spec.rate_tier is not None and (spec.rate_tier not in limits_config.RATE_TIERS
                                       or spec.rate_tier == limits_config.API_TIER):
        tiers = [t for t in limits_config.RATE_TIERS if t != limits_config.API_TIER]
        bad("rate_tier", f"unknown rate tier {spec.rate_tier!r} (every submit counts against "
                         f"{limits_config.API_TIER!r} anyway)", f"use one of {', '.join(tiers)}, or None")
    if spec.slot is not None and spec.slot not in limits_config.CONCURRENCY:
        bad("slot", f"unknown concurrency slot {spec.slot!r}", f"use one of {', '.join(limits_config.CONCURRENCY)}")
    if spec.channel is not None and getattr(keys, getattr(spec.channel, "__name__", ""), None) is not spec.channel:
        bad("channel", f"{spec.channel!r} is not a channel function of mistudio/redis/keys.py",
            "add the channel's function there (every key and channel name lives in keys.py)")
    unknown = [e for e in spec.events if e not in EVENT_TYPES]
    if unknown:
        bad("events", f"unknown event type {', '.join(map(repr, unknown))}", f"use names from events.types: "
                                                                            f"{', '.join(EVENT_TYPES)}")
    if (spec.channel is None) != (not spec.events):
        bad("events", "a channel needs the event types published on it, and event types need a channel",
            "pass both channel= and events=, or neither")
    if spec.channel_param is not None and spec.channel is None:
        bad("channel_param", "names a channel parameter, but the task has no channel", "leave channel_param out")


def registered() -> dict[str, TaskSpec]:
    """The specs registered so far (complete once `mistudio.tasks` is imported: use its all_tasks())."""
    return dict(_TASKS)


def _where(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
