"""TrainingMonitor: a live view of one training job (also what `display(job)` shows).

It listens on the job's channel with an asyncio task on the kernel's event loop (no
thread ever touches a widget), so the kernel stays free and the cancel button works.
Events are applied to plain Python state as they arrive; the widgets are refreshed at
most `refresh_hz` times a second with `batch_update`. Opened mid-run it first replays
the channel's history, so the whole curve is there. When the run ends the live chart
is replaced by a static go.Figure, which a saved notebook keeps.
"""

from __future__ import annotations

import asyncio
import html
import time

import ipywidgets as W
from IPython.display import display

from mistudio.events import Subscription
from mistudio.queue.records import TERMINAL
from mistudio.redis import keys
from mistudio.widgets.polling import keep_running
from mistudio.views.training import TRAINING_METRICS, decimate, training_curves, training_figure

_SHOWN_METRICS = ("loss", "mse", "explained_variance", "l0", "dead_fraction", "dense_fraction", "lr", "tokens_per_s")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class TrainingMonitor:
    def __init__(self, job, *, refresh_hz: float = 2.0, max_points: int = 2000):
        from mistudio.jobs import Job

        self.job = job if isinstance(job, Job) else Job(str(job))
        self.channel = keys.training_channel(self.job.id)
        self.refresh_interval = 1.0 / refresh_hz
        self.max_points = max_points
        # state, updated by apply(); widgets follow in refresh()
        self.curves: dict[str, tuple[list, list]] = {k: ([], []) for k, _ in TRAINING_METRICS}
        self.step = 0
        self.total_steps = 0
        self.metrics: dict = {}
        self.eta_seconds: float | None = None
        self.state = "queued"
        self.phase = ""
        self.final: dict | None = None
        self.error: str | None = None
        self.events_seen = 0
        self.done = False
        self._task: asyncio.Task | None = None
        self._handles = None
        # widgets
        self.title = W.HTML(f"<b>Training {html.escape(self.job.id)}</b>")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="", layout=W.Layout(width="60%"))
        self.progress_text = W.HTML("waiting for the first event...")
        self.metrics_html = W.HTML()
        self.cancel_button = W.Button(description="Cancel", button_style="danger", icon="stop")
        self.cancel_button.on_click(lambda _: self.cancel())
        self.summary = W.HTML()
        self.figure = training_figure(widget=True)
        self.panel = W.VBox([self.title, W.HBox([self.progress, self.progress_text]), self.metrics_html,
                             self.cancel_button, self.summary])

    # --- state ------------------------------------------------------------------------

    def apply(self, event) -> None:
        """Fold one event into the state (cheap; no widget is touched)."""
        self.events_seen += 1
        data = event.data
        if event.type in ("training.progress", "training.checkpoint", "training.completed"):
            self.state = "running" if event.type != "training.completed" else "succeeded"
        if event.type == "training.progress":
            self.phase = data.get("phase", "training")
            self.step = int(data.get("step", self.step))
            self.total_steps = int(data.get("total_steps", self.total_steps) or 0)
            self.eta_seconds = data.get("estimated_remaining_seconds")
            metrics = data.get("metrics") or {}
            self.metrics = metrics
            for key, _ in TRAINING_METRICS:
                if metrics.get(key) is not None:
                    xs, ys = self.curves[key]
                    if xs and self.step <= xs[-1]:  # a redelivered run resumed from a checkpoint
                        while xs and xs[-1] >= self.step:
                            xs.pop()
                            ys.pop()
                    xs.append(self.step)
                    ys.append(float(metrics[key]))
        elif event.type == "training.completed":
            self.final = data
            self.step = int(data.get("step", self.total_steps or self.step))
            self.done = True
        elif event.type == "training.error":
            self.state = "failed"
            self.error = str(data.get("error"))
            self.done = True

    def progress_fraction(self) -> float:
        if self.state == "succeeded":
            return 1.0
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    def history(self) -> list[dict]:
        rows: dict[int, dict] = {}
        for key, (xs, ys) in self.curves.items():
            for x, y in zip(xs, ys):
                rows.setdefault(x, {"step": x})[key] = y
        return [rows[s] for s in sorted(rows)]

    # --- widgets ----------------------------------------------------------------------

    def refresh(self) -> None:
        self.progress.value = self.progress_fraction()
        self.progress.bar_style = {"succeeded": "success", "failed": "danger", "cancelled": "warning",
                                   "dead": "danger"}.get(self.state, "info")
        total = self.total_steps or "?"
        doing = self.phase if self.state == "running" and self.phase not in ("", "training") else self.state
        self.progress_text.value = (f"&nbsp;step {self.step}/{total} &middot; {html.escape(doing)}"
                                    f" &middot; ETA {_eta(self.eta_seconds) if not self.done else '-'}")
        shown = [(k, self.metrics[k]) for k in _SHOWN_METRICS if k in self.metrics]
        self.metrics_html.value = "<table>" + "".join(
            f"<tr><td style='padding-right:1em'>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in shown
        ) + "</table>"
        with self.figure.batch_update():
            for i, (key, _) in enumerate(TRAINING_METRICS):
                xs, ys = decimate(*self.curves[key], self.max_points)
                self.figure.data[i].x, self.figure.data[i].y = xs, ys
        self.cancel_button.disabled = self.done

    def summary_html(self) -> str:
        if self.error:
            return f"<b style='color:#b00'>{html.escape(self.state)}</b>: {html.escape(self.error)}"
        if self.final:
            metrics = self.final.get("final_metrics") or self.final
            parts = [f"{html.escape(k)} = {_fmt(v)}" for k, v in metrics.items() if isinstance(v, (int, float))]
            where = self.final.get("sae_path")
            return "<b>Finished.</b> " + ", ".join(parts[:8]) + (f"<br>SAE: <code>{html.escape(where)}</code>" if where else "")
        return f"<b>{html.escape(self.state)}</b>"

    def static_figure(self):
        return training_curves(self.history(), self.max_points, title=f"Training {self.job.id} ({self.state})")

    def finish(self) -> None:
        self.done = True
        self.refresh()
        self.summary.value = self.summary_html()
        if self._handles is not None:
            chart, panel = self._handles
            chart.update(self.static_figure())  # the saved notebook keeps a plain figure
            panel.update(W.HTML(f"<b>Training {html.escape(self.job.id)}</b>: " + self.summary_html()))

    def cancel(self) -> bool:
        done = self.job.cancel()
        self.summary.value = "cancel requested..." if done else "the job had already ended"
        return done

    # --- listening ----------------------------------------------------------------------

    async def listen(self, timeout: float | None = None) -> None:
        """Follow the channel until the run ends (or timeout seconds pass)."""
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
        self.finish()

    def start(self) -> asyncio.Task | None:
        """Listen on the running event loop (a Jupyter kernel's). None without a running loop."""
        self._task = keep_running(self._task, self.listen)
        return self._task

    async def wait(self) -> "TrainingMonitor":
        """In a notebook: `await monitor.wait()` lets the kernel's loop run the listener until the end."""
        task = self.start()
        if task is not None:
            await asyncio.shield(task)
        return self

    def follow(self, timeout: float | None = None) -> "TrainingMonitor":
        """Blocking: follow until the run ends (scripts and tests; notebooks use display)."""
        asyncio.run(self.listen(timeout))
        return self

    def _ipython_display_(self) -> None:
        self._handles = (display(self.figure, display_id=True), display(self.panel, display_id=True))
        if self.start() is None:
            self.follow()
