"""Widgets driven by real events through Redis (a recorded stream) and real jobs; what they leave
in a notebook, checked in a real ipykernel (nbclient) the way a saved notebook keeps it."""

from __future__ import annotations

import asyncio
import os
import time

import nbformat
import plotly.graph_objects as go
import pytest

from helpers import wait_for
from mistudio import events, jobs
from mistudio.redis import keys
from mistudio.tasks.training import ProgressEvents
from mistudio.views.display import PLOTLY_MIME, WIDGET_MIME
from mistudio.widgets import JobsView, SystemView, TrainingMonitor

pytestmark = pytest.mark.timeout(120)


def _progress(job_id: str, step: int, total: int) -> None:
    events.publish(keys.training_channel(job_id), events.TrainingProgress(
        step=step, total_steps=total, estimated_remaining_seconds=(total - step) * 0.1,
        metrics={"loss": 1.0 / (step + 1), "l0": 32.0, "dead_fraction": 0.5 / (step + 1),
                 "explained_variance": 1 - 1.0 / (step + 1), "tokens_per_s": 1000.0},
    ))


def _record_job(redis_db) -> jobs.Job:
    """A queued job record (no worker): the monitor reads its state and channel."""
    return jobs.submit("diagnostics.echo", {"for": "monitor"})


def test_monitor_opened_mid_run_shows_the_whole_history_and_ends_static(redis_db):
    job = _record_job(redis_db)
    for step in range(0, 300, 10):  # before the monitor exists: it must replay these
        _progress(job.id, step, 400)
    monitor = TrainingMonitor(job, refresh_hz=10)

    async def run():
        listener = asyncio.ensure_future(monitor.listen(timeout=30))
        await asyncio.sleep(0.3)
        for step in range(300, 400, 10):
            _progress(job.id, step, 400)
            await asyncio.sleep(0.01)
        events.publish(keys.training_channel(job.id), events.TrainingCompleted(
            step=400, final_metrics={"explained_variance": 0.9, "l0": 32.0}, sae_path="/runs/x/sae"))
        await listener

    asyncio.run(run())
    assert monitor.done and monitor.state == "succeeded"
    assert monitor.progress.value == 1.0 and monitor.progress.bar_style == "success"
    loss = monitor.trace("loss")
    assert list(loss.x) == list(range(0, 400, 10))
    assert loss.y[-1] == pytest.approx(1.0 / 391)
    assert list(monitor.trace("explained_variance").y)[:2] == [0.0, pytest.approx(1 - 1 / 11)]
    assert "explained_variance = 0.9" in monitor.summary.value and "/runs/x/sae" in monitor.summary.value
    assert monitor.cancel_button.disabled
    static = monitor.static_figure()
    assert isinstance(static, go.Figure) and not isinstance(static, go.FigureWidget)
    assert list(static.data[0].x) == list(range(0, 400, 10))


def test_monitor_decimates_long_curves(redis_db):
    job = _record_job(redis_db)
    monitor = TrainingMonitor(job, max_points=100)
    for step in range(5000):
        monitor.apply(_event(events.TrainingProgress(step=step, total_steps=5000, metrics={"loss": float(step)}),
                             step + 1))
    monitor.refresh()
    xs = list(monitor.trace("loss").x)
    assert len(xs) <= 101 and xs[0] == 0 and xs[-1] == 4999
    assert monitor.progress.value == pytest.approx(4999 / 5000)


def test_monitor_follows_a_job_that_fails_without_events(workers):
    workers.start("cpu")
    job = jobs.submit("diagnostics.fail", {"message": "no events from me"})
    monitor = TrainingMonitor(job, refresh_hz=5).follow(timeout=30)
    assert monitor.done and monitor.state == "failed"
    assert "no events from me" in monitor.summary.value


def test_monitor_cancel_button_cancels_a_running_job(workers):
    from helpers import wait_for

    workers.start("cpu")
    job = jobs.submit("diagnostics.sleep", {"seconds": 60})
    wait_for(lambda: job.status() == "running", message="running")
    monitor = TrainingMonitor(job, refresh_hz=5)
    monitor.cancel_button.click()
    monitor.follow(timeout=30)
    assert monitor.state == "cancelled" and job.status() == "cancelled"


def test_jobs_view_lists_jobs_and_its_buttons_act(redis_db):
    queued = jobs.submit("diagnostics.echo", {"n": 1})
    view = JobsView()
    view.refresh()
    assert [r["id"] for r in view.rows] == [queued.id] and view.rows[0]["state"] == "queued"
    view.act(queued.id, "cancel")
    assert queued.status() == "cancelled" and view.rows[0]["state"] == "cancelled"
    view.act(queued.id, "retry")
    assert queued.status() == "queued"
    asyncio.run(view.run(cycles=2))
    assert view.refreshes >= 4


def test_system_view_shows_workers_queues_and_alerts(workers):
    workers.start("io")
    events.publish(keys.SYSTEM_ALERTS_CHANNEL, events.SystemAlert(level="warning", message="memory at 71%"))
    view = SystemView()
    view.refresh()
    text = view.html.value
    assert "Workers" in text and ":io:" in text and "memory at 71%" in text
    assert view.data["queues"]["io"]["queued"] == 0


# --- what a monitor leaves in a notebook (a real kernel) ----------------------------------


class LabLikeKernel:
    """A real ipykernel, and what JupyterLab does with its messages: each output goes to the cell
    whose execution sent it, even after that cell has finished (a background task's output), and a
    display update replaces the output with that display id in that cell only. (nbclient, and so
    nbval, drops every message of a cell that is no longer running.)"""

    def __init__(self, cwd):
        from jupyter_client import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(cwd), env=dict(os.environ))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.cells: dict[str, dict] = {}

    def run(self, source: str, timeout: float = 90.0) -> tuple[dict, float]:
        """Execute one cell; (the cell as nbformat writes it, seconds until the kernel was idle)."""
        msg_id = self.client.execute(source)
        cell = nbformat.v4.new_code_cell(source)
        cell["display_ids"] = {}
        self.cells[msg_id] = cell
        started = time.monotonic()
        while True:
            msg = self.client.get_iopub_msg(timeout=max(1.0, timeout - (time.monotonic() - started)))
            self._apply(msg)
            if (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
                    and msg["parent_header"].get("msg_id") == msg_id):
                return cell, time.monotonic() - started

    def _apply(self, msg: dict) -> None:
        cell = self.cells.get(msg["parent_header"].get("msg_id"))
        kind, content = msg["msg_type"], msg["content"]
        if cell is None or kind not in ("display_data", "update_display_data", "execute_result", "stream", "error"):
            return
        display_id = (content.get("transient") or {}).get("display_id")
        if kind == "update_display_data":
            for index in cell["display_ids"].get(display_id, []):
                cell.outputs[index] = nbformat.v4.new_output("display_data", data=content["data"])
            return
        fields = {k: v for k, v in content.items() if k not in ("transient", "execution_count")}
        cell.outputs.append(nbformat.v4.new_output(kind, **fields))
        if display_id and kind == "display_data":
            cell["display_ids"].setdefault(display_id, []).append(len(cell.outputs) - 1)

    def notebook(self):
        """The notebook a save would write now."""
        nb = nbformat.v4.new_notebook()
        for cell in self.cells.values():
            saved = nbformat.v4.new_code_cell(cell.source)
            saved.outputs = cell.outputs
            nb.cells.append(saved)
        return nb

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture
def kernel(redis_db, tmp_path):
    """A real kernel on this session's MISTUDIO_HOME and Redis, the widgets imported."""
    lab = LabLikeKernel(tmp_path)
    try:
        lab.run("import mistudio.widgets")  # imports (plotly, ipywidgets) before anything is timed
        yield lab
    finally:
        lab.close()


def _mimes(cell) -> list[set]:
    return [set(o.get("data", {})) for o in cell.outputs]


def test_in_a_kernel_a_finished_run_leaves_one_plain_summary_and_figure_and_then_never_holds_cells(kernel, workers):
    run = kernel.run
    workers.start("cpu")
    job = jobs.submit("diagnostics.sleep", {"seconds": 25, "tag": "done-tag"})
    wait_for(lambda: job.status() == "running", message="running")
    for step in range(0, 50, 10):
        _progress(job.id, step, 100)

    shown, _ = run(f"from mistudio.jobs import get_job\nfrom mistudio.widgets import TrainingMonitor\n"
                   f"job = get_job({job.id!r})\nmonitor = TrainingMonitor(job, refresh_hz=10)\ndisplay(monitor)")
    later_cell, _ = run("def report(job):\n    print('ended:', job.status())\n    return job.result()['tag']\n"
                        "later = monitor.then(report)\nlater")
    live = _mimes(shown)
    assert len(live) == 2 and all(WIDGET_MIME in m for m in live)  # the panel and the chart, live
    assert "When " + job.id + " ends" in later_cell.outputs[0]["data"]["text/plain"]

    answer, seconds = run("1 + 1")  # the non-blocking path: the kernel answers while the job runs
    assert answer.outputs[0]["data"]["text/plain"] == "2" and seconds < 5
    assert job.status() == "running"

    events.publish(keys.training_channel(job.id), events.TrainingCompleted(
        step=100, final_metrics={"explained_variance": 0.9, "l0": 32.0}, sae_path="/runs/x/sae", duration=61.0))
    job.result(timeout=60)
    first, _ = run("await monitor.wait()")
    again, _ = run("await monitor.wait()  # finished: returns at once, draws nothing new")
    run("await later.wait()")

    assert [o["data"]["text/plain"] for o in first.outputs + again.outputs] == ["'succeeded'", "'succeeded'"]
    assert len(shown.outputs) == 2, "one summary and one figure: no copy added at the end"
    summary, figure = shown.outputs
    assert set(summary["data"]) == {"text/html", "text/plain"} and set(figure["data"]) == {PLOTLY_MIME, "text/plain"}
    assert "Finished." in summary["data"]["text/html"] and "100 %" in summary["data"]["text/html"]
    assert "took 1m01s" in summary["data"]["text/html"]
    spec = figure["data"][PLOTLY_MIME]
    assert [t["name"] for t in spec["data"]][0] == "loss" and spec["data"][0]["x"] == [0, 10, 20, 30, 40]
    (result,) = later_cell.outputs
    assert "ended: succeeded" in result["data"]["text/plain"] and "done-tag" in result["data"]["text/plain"]

    nb = kernel.notebook()
    saved = nbformat.writes(nb)
    assert WIDGET_MIME not in saved and "widgets" not in nb.metadata  # reopened: nothing to go missing
    assert len(saved) < 100_000, f"{len(saved)} bytes"


def test_in_a_kernel_a_monitor_shown_after_the_end_is_plain_from_the_start(kernel, redis_db):
    run = kernel.run
    job = _record_job(redis_db)
    for step in range(0, 30, 10):
        _progress(job.id, step, 30)
    events.publish(keys.training_channel(job.id), events.TrainingCompleted(step=30))
    run(f"from mistudio.widgets import TrainingMonitor\nmonitor = TrainingMonitor({job.id!r}, refresh_hz=10)\n"
        "display(monitor)\nawait monitor.wait()")
    shown, _ = run("display(monitor)  # again, once it has ended")
    assert [PLOTLY_MIME in m for m in _mimes(shown)] == [False, True]
    assert WIDGET_MIME not in nbformat.writes(kernel.notebook())


def test_then_shows_what_the_function_raised(kernel, redis_db):
    run = kernel.run
    job = jobs.submit("diagnostics.echo", {})
    jobs.get_job(job.id).cancel()  # ended before anyone waits
    cell, _ = run(f"from mistudio.jobs import get_job\nlater = get_job({job.id!r}).then(lambda job: job.result())\n"
                  "await later.wait()")
    text = cell.outputs[0]["data"]["text/plain"]
    assert "JobFailed" in text and "cancelled" in text


# --- progress: preparation phases, the training ETA, the panels -------------------------


class Clock:
    """A clock the test moves: ETA arithmetic on exact times."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_caching_shows_its_own_progress_and_rate_and_the_training_eta_ignores_preparation_time():
    clock = Clock()
    make = ProgressEvents(clock)
    loading = make({"phase": "loading model", "step": 0, "total_steps": 100})
    assert loading.phase == "loading model" and loading.estimated_remaining_seconds is None
    clock.now += 30
    caching = make({"phase": "caching activations", "step": 0, "total_steps": 100, "stage": "activations",
                    "tokens_done": 2000, "tokens_total": 10000, "tokens_per_s": 500.0})
    assert (caching.phase_done, caching.phase_total, caching.phase_unit) == (2000, 10000, "tokens")
    assert caching.phase_rate == 500.0 and caching.phase_remaining_seconds == pytest.approx(16.0)
    assert caching.metrics == {} and caching.estimated_remaining_seconds is None
    clock.now += 60  # a minute of caching and setup before the first training report
    first = make({"step": 10, "total_steps": 100, "loss": 2.0, "tokens_seen": 10 * 512, "tokens_per_s": 5120.0})
    assert first.estimated_remaining_seconds == pytest.approx(90 * 512 / 5120.0)  # the trainer's own rate
    clock.now += 20
    later = make({"step": 20, "total_steps": 100, "loss": 1.5, "tokens_seen": 20 * 512, "tokens_per_s": 500.0})
    assert later.estimated_remaining_seconds == pytest.approx(80 * 2.0)  # 2 s a step since step 10
    assert later.metrics["loss"] == 1.5 and later.progress == 20.0


def _event(value: events.EventData, seq: int) -> events.Event:
    """The Event a subscriber gets for an event built through its definition."""
    return events.Event("c", value.type, value.to_data(), 0.0, seq)


def test_monitor_text_follows_the_phase_it_is_in(redis_db):
    monitor = TrainingMonitor(_record_job(redis_db))
    make = ProgressEvents(Clock())
    monitor.apply(_event(make({"phase": "caching activations", "step": 0, "total_steps": 977,
                               "tokens_done": 12288, "tokens_total": 40960, "tokens_per_s": 5120.0}), 1))
    monitor.refresh()
    assert monitor.progress.value == pytest.approx(0.3)
    assert monitor.status_text() == "caching activations · 12,288 / 40,960 tokens (30 %) · 5,120 tokens/s · ETA 0m06s"
    monitor.apply(_event(events.TrainingProgress(step=20, total_steps=977, phase="training",
                                                 estimated_remaining_seconds=181,
                                                 metrics={"loss": 3.0, "tokens_per_s": 36000.0}), 2))
    monitor.refresh()
    assert monitor.progress.value == pytest.approx(20 / 977)
    assert monitor.status_text() == "step 20/977 (2 %) · training · 36,000 tokens/s · ETA 3m01s"


def test_topk_curves_show_the_auxk_loss_instead_of_a_flat_l0_and_the_loss_has_a_log_switch(redis_db):
    topk = TrainingMonitor(jobs.submit("diagnostics.echo", {"architecture": "topk"}))
    relu = TrainingMonitor(jobs.submit("diagnostics.echo", {"architecture": "relu"}))
    assert "l0" not in topk.curve_keys and "aux_loss" in topk.curve_keys and "dense_fraction" in topk.curve_keys
    assert "l0" in relu.curve_keys and "aux_loss" not in relu.curve_keys
    for step, metrics in ((10, {"loss": 5.0, "l0": 32.0}), (20, {"loss": 4.0, "l0": 32.0, "aux_loss": 0.7})):
        topk.apply(_event(events.TrainingProgress(step=step, total_steps=30, metrics=metrics), step))
    topk.refresh()
    assert list(topk.trace("aux_loss").y) == [0.0, 0.7]  # no dead latent at step 10: no AuxK term
    assert "AuxK" in topk.figure.layout.annotations[1].text
    assert topk.figure.layout.yaxis.type == "log"
    (switch,) = topk.figure.layout.updatemenus
    assert [b.args[0]["yaxis.type"] for b in switch.buttons] == ["log", "linear"]
    topk.figure.layout.yaxis.type = "linear"  # what the switch does in the browser
    assert topk.static_figure().layout.yaxis.type == "linear"


def test_a_stopped_training_ends_the_monitor_as_its_last_event(redis_db):
    job = _record_job(redis_db)
    for step in range(0, 30, 10):
        _progress(job.id, step, 400)
    events.publish(keys.training_channel(job.id), events.TrainingStopped(step=20, reason="cancelled"))
    monitor = TrainingMonitor(job, refresh_hz=10).follow(timeout=30)
    assert monitor.done and monitor.state == "cancelled" and monitor.step == 20
    assert monitor.error is None and "cancelled" in monitor.final_html()
    assert monitor.progress.bar_style == "warning" and monitor.cancel_button.disabled


def test_display_of_a_job_fits_its_kind_a_training_monitor_only_for_a_training(workers):
    from mistudio.widgets.job_view import JobProgressView, view_for

    assert isinstance(view_for(jobs.submit("train_sae", {"steps": 10})), TrainingMonitor)  # queued, no gpu worker
    workers.start("cpu")
    job = jobs.submit("diagnostics.sleep", {"seconds": 3.0, "tag": "view"})
    view = view_for(job)
    assert isinstance(view, JobProgressView)
    wait_for(lambda: 0 < (job.progress() or {}).get("fraction", 0) < 1, timeout=60, message="the sleep under way")
    view.refresh()
    assert view.state == "running" and 0 < view.bar.value < 1
    assert "diagnostics.sleep" in view.text.value and "running" in view.text.value
    job.result(timeout=60)
    view.refresh()
    assert view.state == "succeeded" and view.bar.value == 1.0 and "100%" in view.text.value
