"""`mistudio up / down / status / worker`."""

from __future__ import annotations

import click

from mistudio import lifecycle, preflight
from mistudio.cli.group import cli
from mistudio.cli.output import age, emit_json, megabytes, table
from mistudio.queue.consumer import run_worker


@cli.command()
@click.option("--no-workers", is_flag=True, help="Start Redis only, not the queue workers.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def up(no_workers: bool, as_json: bool):
    """Start (or reuse) the embedded Redis and the queue workers, in the background."""
    status = lifecycle.up(workers=not no_workers)
    if as_json:
        emit_json(status)
        return
    redis_info = status["redis"]
    click.echo(f"Redis {redis_info['version']} at {redis_info['url']}"
               f" ({'embedded, pid ' + str(redis_info['pid']) if redis_info['embedded'] else 'external'})")
    for queue, q in status["queues"].items():
        pid = q["local_worker_pid"]
        click.echo(f"worker {queue:<4} {'pid ' + str(pid) if pid else 'not running'}")
    click.echo(f"Home: {status['home']}  (logs in {status['home']}/logs)")


@cli.command()
def down():
    """Stop what `mistudio up` started (workers, then Redis with its data saved)."""
    result = lifecycle.down()
    workers = ", ".join(result["workers_stopped"]) or "none running"
    click.echo(f"workers stopped: {workers}; redis: {'stopped' if result['redis_stopped'] else 'was not running'}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool):
    """Redis version, address, memory, clients, persistence; queue depths and workers."""
    s = lifecycle.status()
    if as_json:
        emit_json(s)
        return
    r = s["redis"]
    p = r["persistence"]
    click.echo(f"Redis {r['version']} at {r['address']} ({'embedded' if r['embedded'] else 'external'})")
    click.echo(f"  memory   {megabytes(r['used_memory'])} used of {megabytes(r['maxmemory']) if r['maxmemory'] else 'no limit'}"
               f" ({r['maxmemory_policy']})")
    click.echo(f"  clients  {r['connected_clients']} connected, {r['blocked_clients']} blocked")
    click.echo(f"  persist  AOF {'on' if p['aof_enabled'] else 'off'} ({p['aof_last_write_status']}),"
               f" last RDB save {age(p['rdb_last_save_time'])} ago, {p['rdb_changes_since_last_save']} changes since")
    m = s.get("metrics")
    if m:
        hit_rate = f"{m['hit_rate']:.0%}" if m["hit_rate"] is not None else "-"
        click.echo(f"  load     {m['instantaneous_ops_per_sec']} ops/s, fragmentation {m['mem_fragmentation_ratio']},"
                   f" hit rate {hit_rate}, {m['evicted_keys']} evicted keys")
    rows = [{"queue": q, **v, "local_worker_pid": v["local_worker_pid"] or "-"} for q, v in s["queues"].items()]
    click.echo(table(rows, ["queue", "queued", "scheduled", "in_flight", "dead", "local_worker_pid"]))
    workers = [{**w, "age": f"{w['age']:.0f}s", "active_jobs": ",".join(w.get("active_jobs") or []) or "-",
                "gpu": "-" if w.get("gpu_util") is None else f"{w['gpu_util']:.0f}%",
                "free": megabytes(w["memory_free"]) if w.get("memory_free") is not None else "-"}
               for w in s["workers"]]
    click.echo("Workers:")
    click.echo(table(workers, ["worker_id", "status", "queue", "pid", "age", "gpu", "free", "active_jobs",
                               "run_store"]))
    leader = s.get("leader")
    click.echo(f"Leader: {leader['node']} (term {leader['term']})" if leader else "Leader: none (no worker running)")
    for alert in s.get("alerts", []):
        click.echo(f"ALERT [{alert['level']}] {alert['message']}")


@cli.command()
@click.option("--queue", "-q", type=click.Choice(["gpu", "io", "cpu"]), required=True, help="Which queue to consume.")
@click.option("--workers", "-w", type=int, default=None, help="Worker threads (default: the queue's own).")
def worker(queue: str, workers: int | None):
    """Run one queue's consumer in the foreground (SIGTERM/SIGINT give its job back to the queue)."""

    preflight.check_worker_host()  # before anything starts: an open remote Redis, a missing run store
    run_worker(queue, workers=workers)
