"""Printing for the CLI: one JSON object with --json, short aligned tables otherwise."""

from __future__ import annotations

import json
import time

import click


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def age(ts: float | None) -> str:
    if not ts:
        return "-"
    seconds = max(0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def megabytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"
