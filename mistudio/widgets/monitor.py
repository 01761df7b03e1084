"""TrainingMonitor: a live view of one training job (what `display(job)` shows for a training).

It listens on the job's channel with an asyncio task on the kernel's event loop (no
thread ever touches a widget), so the kernel stays free and the cancel button works.
Events are applied to plain Python state as they arrive; the widgets are refreshed at
most `refresh_hz` times a second with `batch_update`. Opened mid-run it first replays
the channel's history, so the whole curve is there.

It shows two outputs, each through a display handle: the panel (progress, metrics, cancel)
and the chart. When the run ends both are replaced, once, by plain outputs (an HTML summary
and a static figure), so a saved notebook shows the final curves and summary when reopened,
with no widget state. Preparation phases (tokenizing, caching activations) show their own
progress and rate; the ETA during training comes from the training steps' rate alone.
"""

from __future__ import annotations

import asyncio
import contextvars
import html
import time

import ipywidgets as W
from IPython.display import display

from mistudio.events import (
    Subscription,
    TrainingCheckpoint,
    TrainingCompleted,
    TrainingError,
    TrainingProgress,
    TrainingStopped,
)
from mistudio.events.types import CAUSAL_METRICS
from mistudio.jobs import Job
from mistudio.queue.records import TERMINAL
from mistudio.redis import keys
from mistudio.views.display import figure_bundle, html_bundle, widget_bundle
from mistudio.views.training import curves_for, decimate, metric_value, set_points, training_curves, training_figure
from mistudio.widgets.polling import keep_running
from mistudio.widgets.when_done import WhenDone

_SHOWN_METRICS = ("loss", "mse", "explained_variance", "ce_loss_recovered", "kl_divergence", "l0", "aux_loss",
                  "dead_fraction", "dense_fraction", "lr", "tokens_per_s", "peak_rss_mb", "peak_cuda_allocated_mb")
_SUMMARY_FIRST = ("explained_variance", "ce_loss_recovered", "kl_divergence", "l0", "dead_fraction", "dense_fraction",
                  "mse", "loss", "tokens_per_s")
_BAR_STYLES = {"succeeded": "success", "failed": "danger", "cancelled": "warning", "dead": "danger"}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _count(value) -> str:
    return f"{value:,.0f}" if isinstance(value, (int, float)) else "?"


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class TrainingMonitor:
    def __new__(cls, job, **kw):
        """TrainingMonitor(job) of a sweep job is its SweepMonitor (every member's curves)."""
        if cls is TrainingMonitor:
            record = (job if isinstance(job, Job) else Job(str(job))).record() or {}
            if "sweep" in (record.get("params") or {}):
                # why: sweep_monitor subclasses this class (it imports this module)
                from mistudio.widgets.sweep_monitor import SweepMonitor

                return super().__new__(SweepMonitor)
        return super().__new__(cls)

    def __init__(self, job, *, refresh_hz: float = 2.0, max_points: int = 2000):
        self.job = job if isinstance(job, Job) else Job(str(job))
        self.architecture = (self.job.record().get("params") or {}).get("architecture")
        self.channel = keys.training_channel(self.job.id)
        self.refresh_interval = 1.0 / refresh_hz
        self.max_points = max_points
        self.curve_keys = [key for key, _, _ in curves_for(self.architecture)]
        # state, updated by apply(); widgets follow in refresh()
        self.curves: dict[str, tuple[list, list]] = {k: ([], []) for k in self.curve_keys}
        self.step = 0
        self.total_steps = 0
        self.metrics: dict = {}
        self.eta_seconds: float | None = None
        self.phase_progress: dict | None = None  # a preparation phase's done/total/unit/rate/remaining
        self.state = "queued"
        self.phase = ""
        self.final: TrainingCompleted | None = None
        self.error: str | None = None
        self.events_seen = 0
        self.done = False  # the run has ended (the state says how)
        self.finished = False  # ... and the final outputs are drawn
        self._task: asyncio.Task | None = None
        self._outputs: list[tuple] = []  # (context, panel handle, chart handle) per display
        # widgets
        self.title = W.HTML(f"<b>Training {html.escape(self.job.id)}</b>")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="", layout=W.Layout(width="50%"))
        self.progress_text = W.HTML("waiting for the first event...")
        self.metrics_html = W.HTML()
        self.cancel_button = W.Button(description="Cancel", button_style="danger", icon="stop")
        self.cancel_button.on_click(lambda _: self.cancel())
        self.summary = W.HTML()
        self.figure = training_figure(widget=True, architecture=self.architecture)
        self.panel = W.VBox([self.title, W.HBox([self.progress, self.progress_text]), self.metrics_html,
                             self.cancel_button, self.summary])

    # --- state ------------------------------------------------------------------------

    def apply(self, event) -> None:
        """Fold one event into the state (cheap; no widget is touched). Reads the event's typed
        value (events/types.py), so it sees only fields its definition has."""
        self.events_seen += 1
        value = event.payload
        if isinstance(value, (TrainingProgress, TrainingCheckpoint)):
            self.state = "running"
        if isinstance(value, TrainingProgress):
            self.phase = value.phase
            self.step = value.step
            self.total_steps = value.total_steps
            self.eta_seconds = value.estimated_remaining_seconds
            if self.phase == "training":
                self.phase_progress = None
                self.metrics = value.metrics
                self._add_points(self.metrics)
            else:
                self.phase_progress = {"done": value.phase_done, "total": value.phase_total, "unit": value.phase_unit,
                                       "rate": value.phase_rate, "remaining_seconds": value.phase_remaining_seconds}
        elif isinstance(value, TrainingCompleted):
            self.state = "succeeded"
            self.final = value
            self.step = value.step if value.step is not None else (self.total_steps or self.step)
            self.done = True
        elif isinstance(value, TrainingStopped):
            self.state = "cancelled" if value.reason == "cancelled" else "failed"
            self.step = value.step
            self.error = None if value.reason == "cancelled" else f"stopped: {value.reason.replace('_', ' ')}"
            self.done = True
        elif isinstance(value, TrainingError):
            self.state = "failed"
            self.error = value.error
            self.done = True

    def _add_points(self, metrics: dict, curves: dict | None = None) -> None:
        """One report's points on each curve (curves: key -> (xs, ys); default this run's)."""
        curves = self.curves if curves is None else curves
        for key in self.curve_keys:
            value = metric_value(metrics, key, self.architecture)
            if value is None:
                continue
            xs, ys = curves[key]
            # Causal metrics ride along after their eval step (tasks/training.py): plotted there, once.
            step = int(metrics.get("eval_step", self.step)) if key in CAUSAL_METRICS else self.step
            if key in CAUSAL_METRICS and xs and xs[-1] == step:
                continue
            if xs and step <= xs[-1]:  # a redelivered run resumed from a checkpoint
                while xs and xs[-1] >= step:
                    xs.pop()
                    ys.pop()
            xs.append(step)
            ys.append(value)

    def in_preparation(self) -> bool:
        return not self.done and self.phase_progress is not None

    def progress_fraction(self) -> float:
        if self.state == "succeeded":
            return 1.0
        if self.in_preparation():
            done, total = self.phase_progress["done"], self.phase_progress["total"]
            return min(1.0, done / total) if done is not None and total else 0.0
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    def status_text(self) -> str:
        """The line beside the progress bar (plain text)."""
        steps = f"step {self.step:,}/{self.total_steps:,}" if self.total_steps else f"step {self.step:,}"
        percent = f"{100 * self.progress_fraction():.0f} %"
        if self.done:
            took = _duration(self.final.duration if self.final else None)
            ended = f"{self.state} · {steps} ({percent})"
            return ended + (f" · took {took}" if self.final and took != "-" else "")
        if self.in_preparation():
            p = self.phase_progress
            unit = p.get("unit") or "items"
            parts = [self.phase]
            if p.get("total"):
                parts.append(f"{_count(p.get('done'))} / {_count(p['total'])} {unit} ({percent})")
                if p.get("rate"):
                    parts.append(f"{_count(p['rate'])} {unit}/s")
                parts.append(f"ETA {_duration(p.get('remaining_seconds'))}")
            return " · ".join(parts)
        if self.state == "queued":
            return "queued: waiting for a gpu worker"
        if not self.phase:
            return "running: starting"
        parts = [f"{steps} ({percent})", "training"]
        if isinstance(self.metrics.get("tokens_per_s"), (int, float)):
            parts.append(f"{_count(self.metrics['tokens_per_s'])} tokens/s")
        parts.append(f"ETA {_duration(self.eta_seconds)}")
        return " · ".join(parts)

    def history(self) -> list[dict]:
        rows: dict[int, dict] = {}
        for key, (xs, ys) in self.curves.items():
            for x, y in zip(xs, ys):
                rows.setdefault(x, {"step": x})[key] = y
        return [rows[s] for s in sorted(rows)]

    # --- widgets ----------------------------------------------------------------------

    def refresh(self) -> None:
        self.progress.value = self.progress_fraction()
        self.progress.bar_style = _BAR_STYLES.get(self.state, "info")
        self.progress_text.value = "&nbsp;" + html.escape(self.status_text())
        shown = [(k, self.metrics[k]) for k in _SHOWN_METRICS if k in self.metrics]
        where = ({"kl_divergence": f" <span style='color:#555'>(eval at step {self.metrics['eval_step']:,})</span>"}
                 if isinstance(self.metrics.get("eval_step"), int) else {})
        self.metrics_html.value = "<div style='line-height:1.6;font-size:13px'>" + " &middot; ".join(
            f"<span style='color:#555'>{html.escape(k)}</span> <b>{_fmt(v)}</b>{where.get(k, '')}"
            for k, v in shown) + "</div>"
        self._draw_curves()
        self.cancel_button.disabled = self.done

    def _draw_curves(self) -> None:
        with self.figure.batch_update():
            for i, key in enumerate(self.curve_keys):
                set_points(self.figure.data[i], *decimate(*self.curves[key], self.max_points))

    def summary_html(self) -> str:
        if self.error:
            return f"<b style='color:#b00'>{html.escape(self.state)}</b>: {html.escape(self.error)}"
        if self.final:
            metrics = self.final.final_metrics
            first = [k for k in _SUMMARY_FIRST if k in metrics]  # what a researcher looks at first
            keys = first + [k for k in metrics if k not in first]
            parts = [f"{html.escape(k)} = {_fmt(metrics[k])}" for k in keys if isinstance(metrics[k], (int, float))
                     and not isinstance(metrics[k], bool)]
            where = self.final.sae_path
            return "<b>Finished.</b> " + ", ".join(parts[:9]) + (f"<br>SAE: <code>{html.escape(where)}</code>" if where else "")
        return f"<b>{html.escape(self.state)}</b>"

    def final_html(self) -> str:
        """The panel once the run has ended: plain HTML, kept by a saved notebook."""
        colour = {"succeeded": "#2ca02c", "cancelled": "#7f7f7f"}.get(self.state, "#d62728")
        return (f"<div style='text-align:left'><b>Training {html.escape(self.job.id)}</b> · "
                f"<span style='color:{colour}'>{html.escape(self.status_text())}</span><br>{self.summary_html()}</div>")

    def trace(self, key: str):
        """The live chart's trace of one metric."""
        return self.figure.data[self.curve_keys.index(key)]

    def static_figure(self):
        scale = self.figure.layout.yaxis.type or "log"  # keep the scale chosen in the live chart
        return training_curves(self.history(), self.max_points, title=f"Training {self.job.id} ({self.state})",
                               architecture=self.architecture, loss_scale=scale)

    def finish(self) -> None:
        """Draw the end once: the live outputs become a plain summary and a static figure."""
        self.done = True
        if self.finished:
            return
        self.finished = True
        self.refresh()
        self.summary.value = self.summary_html()
        if self._outputs:
            panel = html_bundle(self.final_html(), f"Training {self.job.id}: {self.status_text()}")
            chart = figure_bundle(self.static_figure())
            for context, panel_handle, chart_handle in self._outputs:
                # In the displaying cell's context: the kernel then sends the updates as that cell's
                # output, and JupyterLab applies a display update only within the cell it came from.
                context.run(panel_handle.update, panel, raw=True)
                context.run(chart_handle.update, chart, raw=True)

    def cancel(self) -> bool:
        done = self.job.cancel()
        self.summary.value = "cancel requested..." if done else "the job had already ended"
        return done

    # --- listening ----------------------------------------------------------------------

    async def listen(self, timeout: float | None = None) -> None:
        """Follow the channel until the run ends (or timeout seconds pass)."""
        if self.finished:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        last_refresh = 0.0
        last_status_check = 0.0
        async with Subscription(self.channel) as sub:
            while not self.done:
                if deadline is not None and time.monotonic() > deadline:
                    break
                event = await sub.aget(timeout=self.refresh_interval)
                while event is not None:  # drain what has arrived, then draw once
                    self.apply(event)
                    if self.done:
                        break
                    event = await sub.aget(timeout=0)
                now = time.monotonic()
                if now - last_status_check > 2.0:  # a job can end without events (crash, cancel)
                    last_status_check = now
                    record = await asyncio.to_thread(self.job.record)
                    if record["state"] in TERMINAL and not self.done:
                        # give in-flight events a moment, then take the record's word
                        for _ in range(3):
                            event = await sub.aget(timeout=0.3)
                            if event is not None:
                                self.apply(event)
                        if not self.done:
                            self.state = record["state"]
                            self.error = record.get("error") if record["state"] != "succeeded" else None
                            self.done = True
                    elif record["state"] == "running" and self.state == "queued":
                        self.state = "running"
                if now - last_refresh >= self.refresh_interval:
                    self.refresh()
                    last_refresh = now
        if self.done:
            self.finish()
        else:
            self.refresh()

    def start(self) -> asyncio.Task | None:
        """Listen on the running event loop (a Jupyter kernel's). None without a running loop."""
        if self.finished:
            return None
        self._task = keep_running(self._task, self.listen)
        return self._task

    async def wait(self) -> str:
        """`await monitor.wait()` returns the final state once the run has ended. It holds the
        cell, and so the kernel's execution queue: cells run meanwhile wait behind it (the widgets
        still update and Cancel works). To keep the kernel free, use `monitor.then(fn)` instead."""
        task = self.start()
        if task is not None:
            await asyncio.shield(task)
        return self.state

    def then(self, fn):
        """Run fn(job) on the kernel's loop when the run has ended; what it prints or returns is
        shown in place of this cell's waiting line. Returns at once: the kernel stays free."""

        return WhenDone(self.job, fn, monitor=self).show()

    def follow(self, timeout: float | None = None) -> "TrainingMonitor":
        """Blocking: follow until the run ends (scripts and tests; notebooks use display)."""
        asyncio.run(self.listen(timeout))
        return self

    def _ipython_display_(self) -> None:
        if self.finished:  # already over: plain outputs only
            display(html_bundle(self.final_html(), f"Training {self.job.id}: {self.status_text()}"), raw=True)
            display(figure_bundle(self.static_figure()), raw=True)
            return
        self.refresh()
        self._outputs.append((contextvars.copy_context(),
                              display(widget_bundle(self.panel), raw=True, display_id=True),
                              display(widget_bundle(self.figure), raw=True, display_id=True)))
        if self.start() is None:
            self.follow()
