"""Printing for the CLI: one JSON object with --json, short aligned tables otherwise."""

from __future__ import annotations

import json
import re
import time

import click

CELL_MAX = 40  # characters of one table cell: a long id or error never breaks the table
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def clean(value, limit: int | None = CELL_MAX) -> str:
    """One line of plain text: control characters (newlines, terminal escapes) shown escaped, cut to limit."""
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[clean(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def age(ts: float | None) -> str:
    if not ts:
        return "-"
    seconds = max(0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def duration(seconds: float | None) -> str:
    """'850 ms', '12.3 s', '2 min 26 s', '3 h 05 min'."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def when(ts: float | None) -> str:
    return "-" if not ts else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def megabytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"
