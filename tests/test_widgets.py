"""Widgets driven by real events through Redis (a recorded stream) and real jobs."""

from __future__ import annotations

import asyncio

import plotly.graph_objects as go
import pytest

from mistudio import events, jobs
from mistudio.redis import keys
from mistudio.widgets import JobsView, SystemView, TrainingMonitor

pytestmark = pytest.mark.timeout(120)


def _progress(job_id: str, step: int, total: int) -> None:
    events.publish(keys.training_channel(job_id), "training.progress", {
        "step": step, "total_steps": total, "estimated_remaining_seconds": (total - step) * 0.1,
        "metrics": {"loss": 1.0 / (step + 1), "l0": 32.0, "dead_fraction": 0.5 / (step + 1),
                    "explained_variance": 1 - 1.0 / (step + 1), "tokens_per_s": 1000.0},
    })


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
        events.publish(keys.training_channel(job.id), "training.completed", {
            "step": 400, "final_metrics": {"explained_variance": 0.9, "l0": 32.0}, "sae_path": "/runs/x/sae"})
        await listener

    asyncio.run(run())
    assert monitor.done and monitor.state == "succeeded"
    assert monitor.progress.value == 1.0 and monitor.progress.bar_style == "success"
    loss = monitor.figure.data[0]
    assert list(loss.x) == list(range(0, 400, 10))
    assert loss.y[-1] == pytest.approx(1.0 / 391)
    assert list(monitor.figure.data[3].y)[:2] == [0.0, pytest.approx(1 - 1 / 11)]
    assert "explained_variance = 0.9" in monitor.summary.value and "/runs/x/sae" in monitor.summary.value
    assert monitor.cancel_button.disabled
    static = monitor.static_figure()
    assert isinstance(static, go.Figure) and not isinstance(static, go.FigureWidget)
    assert list(static.data[0].x) == list(range(0, 400, 10))


def test_monitor_decimates_long_curves(redis_db):
    job = _record_job(redis_db)
    monitor = TrainingMonitor(job, max_points=100)
    for step in range(5000):
        monitor.apply(events.Event("c", "training.progress", {"step": step, "total_steps": 5000,
                                                                "metrics": {"loss": float(step)}}, 0.0, step + 1))
    monitor.refresh()
    xs = list(monitor.figure.data[0].x)
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
    events.publish(keys.SYSTEM_ALERTS_CHANNEL, "system.alert", {"level": "warning", "message": "memory at 71%"})
    view = SystemView()
    view.refresh()
    text = view.html.value
    assert "Workers" in text and ":io:" in text and "memory at 71%" in text
    assert view.data["queues"]["io"]["queued"] == 0
