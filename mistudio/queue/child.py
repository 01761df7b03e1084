"""The child process an isolated queue (gpu) runs each job in: `python -m mistudio.queue.child`.

CUDA cannot survive fork, so the worker spawns a fresh interpreter. The worker sends
one JSON line {"start": {...}} on stdin, then possibly {"stop": reason}; the child runs
the task through its queue's Huey app with a JobContext whose stop flag follows those
lines. The parent keeps the lease; the child checks it before each commit (fencing).

The child dies with its parent, so a worker killed with SIGKILL never leaves a job
running behind its back, even when killed while spawning it: the worker sets
PR_SET_PDEATHSIG in the forked child before exec (`parent_death_preexec`) and then
checks the parent is still the one that forked it (the signal is armed only for the
parent alive at that moment); the child checks MISTUDIO_PARENT_PID again first thing,
and a watchdog thread compares it with getppid() (systems without prctl).

Exit status: 0 when the task ran to an end it recorded itself; LEASE_LOST_EXIT when it
stopped because its lease is gone or could not be confirmed (the worker gives the job
back; it does not fail).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time

from mistudio.queue import context
from mistudio.queue.apps import huey_app
from mistudio.redis.connection import get_client

PARENT_ENV = "MISTUDIO_PARENT_PID"
LEASE_LOST_EXIT = 75  # EX_TEMPFAIL
_PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)


def _load_prctl():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_prctl = _load_prctl()  # resolved before any fork: the preexec hook only calls it


def parent_death_preexec(parent: int):
    """A subprocess preexec_fn (runs in the forked child before exec): SIGKILL this process
    when its parent dies, and exit now if the parent already died (the child was reparented)."""

    def preexec() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, _SIGKILL)
        if os.getppid() != parent:
            os._exit(137)

    return preexec


def _die_with_parent() -> None:
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, _SIGKILL)
    if os.getppid() != parent:
        os._exit(137)

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(137)
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _read_commands(ctx) -> None:
    for line in sys.stdin:
        try:
            command = json.loads(line)
        except ValueError:
            continue
        if "stop" in command:
            ctx.stop(command["stop"])
    # stdin closed: the parent is gone
    ctx.stop("lease_lost")


def main() -> int:
    _die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s child[%(process)d] %(levelname)s %(name)s: %(message)s")
    start = json.loads(sys.stdin.readline())["start"]
    app = huey_app(start["queue"])
    task = app.deserialize_task(start["message"].encode())
    ctx = context.JobContext(
        job_id=start["job_id"], task=task.name, queue=start["queue"], attempt=start["attempt"],
        lease_id=start["lease_id"], worker_id=start["worker_id"], storage=app.storage, results=get_client("results"),
    )
    signal.signal(signal.SIGTERM, lambda *_: ctx.stop("shutdown"))
    threading.Thread(target=_read_commands, args=(ctx,), name="commands", daemon=True).start()
    context.activate(ctx)
    app.execute(task)
    return LEASE_LOST_EXIT if ctx.stop_reason == "lease_lost" else 0


if __name__ == "__main__":
    sys.exit(main())
