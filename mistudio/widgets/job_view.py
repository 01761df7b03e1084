"""What `display(job)` shows: a training's TrainingMonitor, or for any other kind of job a
JobProgressView (its state and progress bar, read from the job record's snapshot)."""

from __future__ import annotations

import html

import ipywidgets as W
from IPython.display import display

from mistudio.events import progress_of
from mistudio.queue.records import TERMINAL
from mistudio.views.display import html_bundle
from mistudio.widgets.jobs_view import _STATE_COLOURS, _progress
from mistudio.widgets.monitor import TrainingMonitor
from mistudio.widgets.polling import PollingView

TRAINING_TASK = "train_sae"  # the one kind whose channel carries training.* events for TrainingMonitor


def view_for(job):
    """The notebook view that fits the job's kind."""
    if (job.record() or {}).get("task") == TRAINING_TASK:
        return TrainingMonitor(job)  # a sweep's: a SweepMonitor
    return JobProgressView(job)


class JobProgressView(PollingView):
    """One job of any kind: task, id, state and progress, polled until it ends; once ended it
    shows plain HTML (a saved notebook keeps it, no widget state)."""

    interval = 1.0

    def __init__(self, job):
        super().__init__()
        self.job = job
        self.state = "queued"
        self.bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="50%"))
        self.text = W.HTML()
        self.widget = W.HBox([self.bar, self.text])

    def fetch(self) -> tuple[dict, dict | None]:
        return self.job.record(), self.job.progress()

    def line(self, record: dict, progress: dict | None) -> str:
        colour = _STATE_COLOURS.get(record["state"], "#000")
        shown = "100%" if record["state"] == "succeeded" else _progress(progress)
        text = (f"<b>{html.escape(record['task'])} {html.escape(self.job.id)}</b> · "
                f"<span style='color:{colour}'>{html.escape(record['state'])}</span> · {html.escape(shown)}")
        if record.get("error"):
            text += f"<br><span style='color:#d62728'>{html.escape(str(record['error']))}</span>"
        return text

    def draw(self, data) -> None:
        record, progress = data
        self.state = record["state"]
        fraction = 1.0 if self.state == "succeeded" else _fraction(progress)
        self.bar.value = fraction
        self.bar.bar_style = {"succeeded": "success", "failed": "danger", "dead": "danger",
                              "cancelled": "warning"}.get(self.state, "info")
        self.text.value = "&nbsp;" + self.line(record, progress)
        if self.state in TERMINAL:
            self.stop()

    def _ipython_display_(self) -> None:
        record, progress = self.fetch()
        if record["state"] in TERMINAL:
            display(html_bundle(self.line(record, progress), f"{record['task']} {self.job.id}: {record['state']}"),
                    raw=True)
            return
        super()._ipython_display_()


def _fraction(progress: dict | None) -> float:
    value = progress_of(progress)
    fraction = value.position().fraction if value is not None else None
    if fraction is None and isinstance((progress or {}).get("fraction"), (int, float)):
        fraction = progress["fraction"]
    return float(fraction or 0.0)
