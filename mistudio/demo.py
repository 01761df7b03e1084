"""The headless main job behind `make demo`."""

from __future__ import annotations

import click

from mistudio import jobs, lifecycle


def run_demo(keep_running: bool = True) -> dict:
    status = lifecycle.up()
    click.echo(f"Redis {status['redis']['version']} at {status['redis']['url']}; workers on "
               + ", ".join(q for q, v in status["queues"].items() if v["local_worker_pid"]))
    # A round trip through every queue: each job runs in that queue's worker.
    checks = {q: jobs.submit("diagnostics.echo", {"queue": q}, queue=q) for q in ("cpu", "io", "gpu")}
    for queue, job in checks.items():
        job.result(timeout=120)
        click.echo(f"queue {queue}: job {job.id} {job.status()} (attempt {job.record()['attempts']})")
    if not keep_running:
        lifecycle.down()
    return {"checks": {q: j.id for q, j in checks.items()}}
