"""`mistudio jobs / job / cancel / retry`."""

from __future__ import annotations

import click

from mistudio import jobs as jobs_api
from mistudio.cli import cli
from mistudio.cli.output import age, emit_json, table


def _progress_text(progress: dict | None) -> str:
    if not progress:
        return "-"
    if "step" in progress and progress.get("total_steps"):
        return f"{progress['step']}/{progress['total_steps']}"
    if progress.get("total") and "done" in progress:
        return f"{progress['done']}/{progress['total']}"
    if "fraction" in progress:
        return f"{100 * progress['fraction']:.0f}%"
    return "-"


@cli.command("jobs")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--state", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled", "dead"]))
@click.option("--limit", type=int, default=30, show_default=True)
def list_jobs(as_json: bool, state: str | None, limit: int):
    """Recent jobs, newest first (dead letters included, state 'dead')."""
    rows = jobs_api.list_jobs(limit, state=state)
    if as_json:
        emit_json({"jobs": rows})
        return
    view = [
        {**r, "progress": _progress_text(r.get("progress")), "age": age(r["created_at"]), "worker": r["worker"] or "-"}
        for r in rows
    ]
    click.echo(table(view, ["id", "task", "queue", "state", "progress", "attempts", "worker", "age"]))


@cli.command("job")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def show_job(job_id: str, as_json: bool):
    """One job: its record, progress and result or error."""
    job = jobs_api.get_job(job_id)
    record = job.record()
    data = {**record, "progress": job.progress(), "result": job.stored()}
    if as_json:
        emit_json(data)
        return
    for name in ("id", "task", "queue", "priority", "state", "attempts", "worker", "note", "error"):
        if data.get(name) not in (None, ""):
            click.echo(f"{name:<10} {data[name]}")
    click.echo(f"{'params':<10} {data['params']}")
    if data["progress"]:
        click.echo(f"{'progress':<10} {data['progress']}")
    stored = data["result"] or {}
    if stored.get("result") is not None:
        click.echo(f"{'result':<10} {stored['result']}")
    if stored.get("traceback"):
        click.echo(stored["traceback"])


@cli.command()
@click.argument("job_id")
def cancel(job_id: str):
    """Cancel a job: a queued one never runs, a running one is stopped."""
    done = jobs_api.get_job(job_id).cancel()
    click.echo(f"{job_id}: {'cancel requested' if done else 'already ended'}")


@cli.command()
@click.argument("job_id")
def retry(job_id: str):
    """Run a failed, cancelled or dead job again under the same id."""
    jobs_api.get_job(job_id).retry()
    click.echo(f"{job_id}: queued again")
