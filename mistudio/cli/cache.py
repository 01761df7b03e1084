"""`mistudio cache stats / clear`: the Redis cache of feature statistics and API answers."""

from __future__ import annotations

import click

from mistudio import cache
from mistudio.cli.group import cli
from mistudio.cli.output import emit_json, table


@cli.group("cache")
def cache_group():
    """The cache (feature statistics, correlations, model and dataset facts, API answers)."""


@cache_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stats(as_json: bool):
    """Hits, misses, stale answers and values served uncached, per namespace."""
    rows = [{"namespace": name, **cache.stats(name), "hit_rate": f"{cache.hit_rate(name):.1f}%"}
            for name in cache.POLICIES]
    if as_json:
        emit_json(rows)
        return
    click.echo(table(rows, ["namespace", "hits", "misses", "stale", "uncached", "hit_rate"]))


@cache_group.command("clear")
@click.argument("namespace", required=False, type=click.Choice(list(cache.POLICIES)))
def clear(namespace: str | None):
    """Delete the cached values of one namespace, or of all (frees Redis memory; nothing else is touched)."""
    removed = cache.clear(namespace)
    click.echo(f"removed {removed} cache key(s){' of ' + namespace if namespace else ''}")
