"""The child process an isolated queue (gpu) runs each job in: `python -m mistudio.queue.child`.

CUDA cannot survive fork, so the worker spawns a fresh interpreter. The worker sends
one JSON line {"start": {...}} on stdin, then possibly {"stop": reason}; the child runs
the task through its queue's Huey app with a JobContext whose stop flag follows those
lines. The parent keeps the lease; the child checks it before each commit (fencing).
The child dies with its parent (PR_SET_PDEATHSIG, plus a watchdog on other systems),
so a worker killed with SIGKILL never leaves a job running behind its back.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time


def _die_with_parent() -> None:
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(137)
            time.sleep(1.0)

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
    from mistudio.queue import context
    from mistudio.queue.apps import huey_app
    from mistudio.redis.connection import get_client

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
