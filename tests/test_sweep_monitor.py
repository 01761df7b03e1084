"""The monitor of a sweep job: every member's curves in one figure (a colour and legend entry
each), their latest metrics side by side, and at the end a plain table of the members' results.
Driven by real events through Redis on the job's channel, as the worker publishes them."""

from __future__ import annotations

import asyncio

import plotly.graph_objects as go
import pytest

from mistudio import events, jobs
from mistudio.redis import keys
from mistudio.tasks.training import SweepProgressEvents
from mistudio.widgets import SweepMonitor, TrainingMonitor
from mistudio.widgets.job_view import view_for

pytestmark = pytest.mark.timeout(120)


def _sweep_job() -> jobs.Job:  # recorded and queued; no worker runs it: the test publishes its events
    return jobs.submit("train_sae", {"steps": 400, "sweep": [{"k": 8}, {"k": 16, "expansion_factor": 8}]})


def _report(step: int, member: int) -> dict:
    return {"step": step, "total_steps": 400, "loss": (1 + member) / (step + 1), "l0": 8.0 * (member + 1),
            "explained_variance": 1 - (1 + member) / (step + 10), "dead_fraction": 0.0, "tokens_per_s": 5000.0,
            "peak_rss_mb": 900.0, "tokens_seen": 512 * step}


def test_a_sweep_monitor_draws_every_members_curves_and_ends_with_their_table(redis_db):
    job = _sweep_job()
    ids = [f"{job.id}-m0", f"{job.id}-m1"]
    sweep = SweepProgressEvents(ids, ["d_sae=1536 k=8", "d_sae=3072 k=16"])
    channel = keys.training_channel(job.id)

    def publish(step):
        for member in (0, 1):
            event = sweep(member, _report(step, member))
            assert (event is None) == (member == 0)  # one event per step, once the last member reported
        events.publish(channel, event)

    for step in range(10, 200, 10):
        publish(step)
    monitor = TrainingMonitor(job, refresh_hz=10)
    assert isinstance(monitor, SweepMonitor) and isinstance(view_for(job), SweepMonitor)

    async def run():
        listener = asyncio.ensure_future(monitor.listen(timeout=30))
        await asyncio.sleep(0.3)
        for step in range(200, 410, 10):
            publish(step)
            await asyncio.sleep(0.01)
        members = [{"training_id": tid, "label": "", "sae_path": f"/runs/{tid}/sae",
                    "final_metrics": {"explained_variance": 0.9 - 0.1 * i, "l0": 8.0 * (i + 1)}}
                   for i, tid in enumerate(ids)]
        events.publish(channel, events.TrainingCompleted(step=400, final_metrics={"members": 2}, members=members))
        await listener

    asyncio.run(run())
    assert monitor.done and monitor.state == "succeeded"
    assert monitor.labels == ["d_sae=1536 k=8", "d_sae=3072 k=16"]
    for member in (0, 1):
        loss = monitor.trace("loss", member)
        assert list(loss.x) == list(range(10, 410, 10))  # the history before the monitor, then live
        assert loss.y[-1] == pytest.approx((1 + member) / 401)
        assert loss.name == monitor.labels[member]
    assert monitor.trace("loss", 0).line.color != monitor.trace("loss", 1).line.color
    assert [t.name for t in monitor.figure.data if t.showlegend] == monitor.labels  # one legend entry each
    assert "tokens_per_s" in monitor.metrics_html.value and "peak_rss_mb" in monitor.metrics_html.value
    assert "d_sae=3072 k=16" in monitor.metrics_html.value
    summary = monitor.summary.value
    assert ids[0] in summary and ids[1] in summary and "0.8" in summary and "explained_variance" in summary
    static = monitor.static_figure()
    assert isinstance(static, go.Figure) and not isinstance(static, go.FigureWidget)
    assert len(static.data) == len(monitor.figure.data) and list(static.data[0].x) == list(range(10, 410, 10))


def test_a_member_label_is_escaped(redis_db):
    monitor = SweepMonitor(_sweep_job())
    monitor.labels[0] = "<script>x</script>"
    assert "<script>" not in monitor.members_table([{"l0": 1.0}, {}])
