"""Small real tasks that exercise the queue end to end (`mistudio` self-checks and tests).

They run on the cpu queue unless a submit names another (`jobs.submit(..., queue="gpu")`).
"""

from __future__ import annotations

import os
import socket
import time

from mistudio.errors import InvalidInput
from mistudio.queue.tasks import task
from mistudio.validation import preview


def _validate_sleep(params: dict) -> dict:
    seconds = params.get("seconds", 1.0)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds >= 0:
        raise InvalidInput("seconds", f"must be a non-negative number, got {preview(seconds)}", "pass e.g. seconds=2")
    return {"seconds": float(seconds), "tag": str(params.get("tag", ""))}


@task("diagnostics.sleep", queue="cpu", priority=1, validate=_validate_sleep, id_prefix="diag",
      description="sleep for `seconds`, reporting progress (cancellable)")
def sleep(job, seconds: float, tag: str = "") -> dict:
    """Sleep in small steps, reporting progress and honouring cancellation."""
    started = time.time()
    while (elapsed := time.time() - started) < seconds:
        if job.should_stop():
            break
        job.progress({"elapsed": elapsed, "total": seconds, "fraction": elapsed / seconds if seconds else 1.0})
        time.sleep(min(0.05, seconds - elapsed))
    return {
        "tag": tag,
        "started": started,
        "finished": time.time(),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "attempt": job.attempt,
        "worker": job.worker_id,
    }


@task("diagnostics.echo", queue="cpu", priority=1, id_prefix="diag", description="return its parameters")
def echo(job, **params) -> dict:
    return {"params": params, "attempt": job.attempt, "started": time.time()}


@task("diagnostics.fail", queue="cpu", priority=1, id_prefix="diag", description="raise, to check failure handling")
def fail(job, message: str = "diagnostics.fail was asked to fail") -> dict:
    raise RuntimeError(message)
