"""One Huey app per queue kind (gpu, io, cpu), on the lease storage, with JSON messages.

Every task (mistudio.tasks) is registered with every app: its spec's route decides where a
job goes, and a job may be sent to another queue on purpose (e.g. a diagnostic).
"""

from __future__ import annotations

import logging
import threading
import traceback

from huey import Huey

from mistudio.queue import context, endings
from mistudio.queue.routes import queue_spec
from mistudio.queue.serializer import JSONSerializer
from mistudio.queue.storage import LeaseStorage
from mistudio.queue.tasks import TaskSpec
from mistudio.redis.connection import connection_pool
from mistudio.settings import Settings, get_settings
from mistudio.tasks import all_tasks
from mistudio.validation import check_params

logger = logging.getLogger("mistudio.queue")

_apps: dict[tuple, Huey] = {}
_lock = threading.Lock()


def run_job(spec: TaskSpec, job_id: str, params: dict):
    """The body of every Huey task: run the task function and record how it ended."""
    ctx = context.current()
    try:
        params = check_params(spec, params)  # a message is input: checked again, as at submit; bad ones fail here
        result = spec.fn(ctx, **params)
    except Exception as exc:
        reason = ctx.stop_reason
        if reason in ("lease_lost", "shutdown"):
            logger.info("job %s: stopped (%s); another delivery will run it", job_id, reason)
            return None
        if reason == "cancelled":
            _commit(ctx, spec, params, "cancelled", error="cancelled by user")
            return None
        error = "time limit exceeded" if reason == "time_limit" else f"{type(exc).__name__}: {exc}"
        if not _commit(ctx, spec, params, "failed", error=error, tb=traceback.format_exc()):
            return None  # not ours to record any more (lease lost): another delivery runs it
        raise
    reason = ctx.stop_reason
    if reason in ("lease_lost", "shutdown"):
        return None
    if reason == "cancelled":
        _commit(ctx, spec, params, "cancelled", result=result, error="cancelled by user")
    elif reason == "time_limit":
        _commit(ctx, spec, params, "failed", result=result, error="time limit exceeded")
    else:
        _commit(ctx, spec, params, "succeeded", result=result)
    return None


def _commit(ctx: context.JobContext, spec: TaskSpec, params: dict, state: str, *, result=None, error=None,
            tb=None) -> bool:
    """The job's outcome, written only under its lease (checked, then compare-and-set on it)."""
    if not ctx.before_commit():
        return False
    return endings.finish(ctx.results, ctx.job_id, state, task=spec.name, params=params, lease=ctx.lease_id,
                          result=result, error=error, traceback=tb)


class MistudioHuey(Huey):
    """Huey with job records in charge of cancellation: Huey's revoke flags (a Redis
    read before every task) are not used; cancel a job with Job.cancel()."""

    def is_revoked(self, task, timestamp=None, peek=True):
        return False

    def revoke(self, *args, **kwargs):
        raise NotImplementedError("cancel jobs with mistudio.jobs.Job.cancel(), not Huey's revoke")

    revoke_all = revoke_by_id = revoke


def _register(app: Huey, spec: TaskSpec) -> None:
    def entry(job_id: str, params: dict):
        return run_job(spec, job_id, params)

    entry.__name__ = entry.__qualname__ = spec.name.replace(".", "_")
    wrapper = app.task(name=spec.name, retries=0)(entry)
    app.mistudio_tasks[spec.name] = wrapper
    app.message_names[app._registry.task_to_string(wrapper.task_class)] = spec.name  # as messages name it


def huey_app(queue: str, settings: Settings | None = None) -> Huey:
    """The Huey app of one queue kind (cached per Redis endpoint and settings)."""
    settings = settings or get_settings()
    spec = queue_spec(queue)
    pool = connection_pool("queue", decode_responses=False, settings=settings)
    key = (spec.name, id(pool), settings.lease_seconds)
    with _lock:
        app = _apps.get(key)
        if app is None:
            app = MistudioHuey(
                spec.name,
                results=False,  # results live in the job records, not Huey's result hash
                utc=True,
                serializer=JSONSerializer(),
                storage_class=LeaseStorage,
                connection_pool=pool,
                lease_seconds=settings.lease_seconds,
            )
            app.mistudio_tasks, app.message_names = {}, {}
            for task_spec in all_tasks().values():
                _register(app, task_spec)
            _apps[key] = app
        return app


def make_task(app: Huey, name: str, job_id: str, params: dict, priority: int):
    """A Huey Task instance for a job: the message id is the job id."""
    wrapper = app.mistudio_tasks[name]
    return wrapper.task_class((job_id, params), {}, id=job_id, priority=priority)
