"""`mistudio submit TASK` (any task, parameters as key=value or JSON) and `mistudio tasks`.

The task-specific commands (`train`, `features`) add options and summaries; this one reaches
every registered task, so a new task is on the command line with no CLI code of its own.
"""

from __future__ import annotations

import json

import click

from mistudio import jobs
from mistudio.cli.group import cli
from mistudio.cli.output import emit_json, table
from mistudio.cli.progress import follow
from mistudio.errors import InvalidInput
from mistudio.tasks import table as task_table


def _params(pairs: tuple[str, ...], params_json: str | None) -> dict:
    params: dict = {}
    if params_json is not None:
        try:
            params = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise InvalidInput("--params", f"is not valid JSON ({exc})", """pass a JSON object, e.g. '{"seconds": 2}'""")
        if not isinstance(params, dict):
            raise InvalidInput("--params", f"holds a {type(params).__name__}", """pass a JSON object, e.g. '{"seconds": 2}'""")
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise InvalidInput("--param", f"{pair!r} is not NAME=VALUE", "write e.g. -p seconds=2 -p tag=hello")
        try:
            params[name] = json.loads(text)  # numbers, true/false, null, lists, objects
        except json.JSONDecodeError:
            params[name] = text  # anything else is a string
    return params


@cli.command()
@click.argument("task")
@click.option("-p", "--param", "pairs", multiple=True, metavar="NAME=VALUE",
              help="A parameter (repeatable); VALUE is read as JSON if it parses (2, true, null), else as text.")
@click.option("--params", "params_json", metavar="JSON", help="All parameters as one JSON object (-p overrides).")
@click.option("--queue", help="Another queue than the task's own.")
@click.option("--priority", type=int, help="Another priority than the task's own (0..255, higher first).")
@click.option("--job-id", help="The job's id (default: the task's prefix and a random suffix).")
@click.option("--wait", is_flag=True, help="Follow the job (a progress bar on its channel) until it ends.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def submit(task, pairs, params_json, queue, priority, job_id, wait, as_json):
    """Submit a job of any task (see `mistudio tasks`) and print its id."""
    job = jobs.submit(task, _params(pairs, params_json), queue=queue, priority=priority, job_id=job_id)
    record, channel = job.record(), job.channel()
    if wait:
        record = follow(job, channel) if channel else job.wait()
    out = {"job_id": job.id, "task": task, "queue": record["queue"], "priority": record["priority"],
           "channel": channel, "state": record["state"], "params": record["params"]}
    if wait:
        out.update(result=(job.stored() or {}).get("result"), error=record.get("error"))
    if as_json:
        emit_json(out)
    elif not wait:
        click.echo(job.id)
    elif record["state"] == "succeeded":
        click.echo(f"{job.id}: succeeded")
    else:
        raise click.ClickException(f"{job.id} {record['state']}: {record.get('error')}")


@cli.command("tasks")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_tasks(as_json: bool):
    """The tasks `mistudio submit` runs: queue, priority, rate tier, concurrency slot, channel, events."""
    rows = task_table()
    if as_json:
        emit_json({"tasks": rows})
    else:
        click.echo(table(rows, ["task", "queue", "priority", "rate tier", "slot", "channel", "description"]))
