"""`mistudio jobs / job / cancel / retry`."""

from __future__ import annotations

import click

from mistudio import jobs as jobs_api
from mistudio.cli.group import cli
from mistudio.cli.output import age, emit_json, table
from mistudio.cli.summary import job_summary, progress_text


@cli.command("jobs")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--state", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled", "dead"]))
@click.option("--limit", type=click.IntRange(1, 10_000), default=30, show_default=True)
def list_jobs(as_json: bool, state: str | None, limit: int):
    """Recent jobs, newest first (dead letters included, state 'dead')."""
    rows = jobs_api.list_jobs(limit, state=state)
    if as_json:
        emit_json({"jobs": rows})
        return
    view = [
        {**r, "progress": progress_text(r.get("progress"), r["state"]), "age": age(r["created_at"]),
         "worker": r["worker"] or "-"}
        for r in rows
    ]
    click.echo(table(view, ["id", "task", "queue", "state", "progress", "attempts", "worker", "age"]))


@cli.command("job")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: record, progress, result.")
def show_job(job_id: str, as_json: bool):
    """One job: state, attempts, worker, times, progress, final metrics or error (traceback)."""
    job = jobs_api.get_job(job_id)
    record = job.record()
    progress, stored = job.progress(), job.stored()
    if as_json:
        started, finished = record.get("started_at"), record.get("finished_at")
        emit_json({**record, "duration_s": finished - started if started and finished else None,
                   "progress": progress, "result": stored})
        return
    click.echo(job_summary(record, progress, stored))


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
