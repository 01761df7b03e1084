"""JobsView: a live table of jobs with cancel and retry buttons."""

from __future__ import annotations

import html
import time

import ipywidgets as W

from mistudio.jobs import get_job, list_jobs
from mistudio.events import TrainingProgress, progress_of
from mistudio.widgets.polling import PollingView

COLUMNS = ("id", "task", "queue", "state", "progress", "attempts", "worker", "age")
_STATE_COLOURS = {"running": "#1f77b4", "succeeded": "#2ca02c", "failed": "#d62728", "dead": "#8c564b",
                  "cancelled": "#7f7f7f", "queued": "#ff7f0e"}


def _progress(progress: dict | None) -> str:
    """A job record's progress snapshot, read through its event's definition (events.progress_of)."""
    if not progress:
        return "-"
    value = progress_of(progress)
    if value is None:  # a task writing its own snapshot (the diagnostics' sleep)
        fraction = progress.get("fraction")
        return f"{100 * fraction:.0f}%" if isinstance(fraction, (int, float)) else "-"
    position = value.position()
    if isinstance(value, TrainingProgress) and value.phase != "training":  # a preparation phase: its own share
        return f"{value.phase} {100 * position.fraction:.0f}%" if position.fraction is not None else value.phase
    return f"{100 * position.fraction:.0f}%" if position.fraction is not None else "-"


def _age(ts: float | None) -> str:
    if not ts:
        return "-"
    s = max(0, time.time() - ts)
    return f"{s / 3600:.1f}h" if s >= 3600 else f"{s / 60:.0f}m" if s >= 60 else f"{s:.0f}s"


class JobsView(PollingView):
    interval = 1.0

    def __init__(self, limit: int = 20, state: str | None = None):
        super().__init__()
        self.limit, self.state = limit, state
        self.rows: list[dict] = []
        self.message = W.HTML()
        self.grid = W.GridBox(layout=W.Layout(grid_template_columns=f"repeat({len(COLUMNS)}, auto) auto auto",
                                              grid_gap="2px 12px"))
        self.widget = W.VBox([W.HTML("<b>Jobs</b>"), self.grid, self.message])

    def fetch(self) -> list[dict]:
        return list_jobs(self.limit, state=self.state)

    def cells(self, record: dict) -> dict:
        return {
            "id": record["id"], "task": record["task"], "queue": record["queue"], "state": record["state"],
            "progress": _progress(record.get("progress")), "attempts": str(record["attempts"]),
            "worker": record["worker"] or "-", "age": _age(record["created_at"]),
        }

    def draw(self, records: list[dict]) -> None:
        rows = [self.cells(r) for r in records]
        if rows == self.rows:
            return  # nothing changed: leave the widgets alone
        self.rows = rows
        children = [W.HTML(f"<b>{c}</b>") for c in COLUMNS] + [W.HTML(""), W.HTML("")]
        for row in rows:
            colour = _STATE_COLOURS.get(row["state"], "#000")
            for c in COLUMNS:
                text = html.escape(row[c])
                children.append(W.HTML(f"<span style='color:{colour}'>{text}</span>" if c == "state" else text))
            cancel = W.Button(description="cancel", layout=W.Layout(width="70px"),
                              disabled=row["state"] not in ("queued", "running"))
            retry = W.Button(description="retry", layout=W.Layout(width="70px"),
                             disabled=row["state"] not in ("failed", "cancelled", "dead"))
            cancel.on_click(lambda _, job_id=row["id"]: self.act(job_id, "cancel"))
            retry.on_click(lambda _, job_id=row["id"]: self.act(job_id, "retry"))
            children += [cancel, retry]
        self.grid.children = children

    def act(self, job_id: str, action: str) -> None:
        try:
            job = get_job(job_id)
            result = job.cancel() if action == "cancel" else job.retry()
            self.message.value = f"{html.escape(job_id)}: {action} {'requested' if result else 'not needed'}"
        except Exception as exc:  # shown, not raised: a button callback has nowhere to raise to
            self.message.value = f"<span style='color:#d62728'>{html.escape(str(exc))}</span>"
        self.refresh()
