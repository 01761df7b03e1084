"""Causal metrics and the ablation effect through the jobs, on the tiny random GPT-2: a train_sae
job on a real gpu worker streams CE-loss recovered and KL at its eval steps (and the monitor shows
them), an extract_features job stores the ablation effect, and the FeatureBrowser's card shows it
beside the promoted and suppressed tokens."""

from __future__ import annotations

import pytest

from mistudio import events, jobs
from mistudio.errors import InvalidInput
from mistudio.events.types import CAUSAL_METRICS
from mistudio.redis import keys
from mistudio.tasks.training import ProgressEvents
from ml_helpers import save_tiny_gpt2

pytestmark = pytest.mark.timeout(300)

EVAL_STEPS = [8, 16, 24]


def test_the_last_evals_metrics_ride_along_in_later_training_events():
    events_of = ProgressEvents(clock=iter(range(100)).__next__)
    first = events_of({"phase": "training", "step": 4, "total_steps": 24, "loss": 1.0})
    assert not any(k in first.metrics for k in CAUSAL_METRICS)
    evaluated = {"ce_loss_recovered": 0.8, "kl_divergence": 0.2, "ce_clean": 3.0, "ce_spliced": 3.5, "ce_zero": 5.5}
    at_eval = events_of({"phase": "training", "step": 8, "total_steps": 24, "loss": 0.9, **evaluated})
    later = events_of({"phase": "training", "step": 12, "total_steps": 24, "loss": 0.8})
    for event in (at_eval, later):  # a coalescing publisher may send only the later one
        assert {k: event.metrics[k] for k in CAUSAL_METRICS} == evaluated and event.metrics["eval_step"] == 8
    assert later.metrics["loss"] == 0.8


def test_a_training_job_streams_causal_metrics_and_extraction_ablates(workers, tmp_path):
    from mistudio import feature_queries
    from mistudio.widgets import FeatureBrowser, TrainingMonitor

    model = save_tiny_gpt2(tmp_path / "gpt2")
    workers.start("gpu", lease=10)
    job = jobs.submit("train_sae", {"model": str(model), "layer": 1, "steps": 24, "batch_size": 256,
                                    "expansion_factor": 4, "k": 8, "log_every": 4, "eval_every": 8,
                                    "checkpoint_every": 24, "device": "cpu"})
    final = job.result(timeout=240)["final_metrics"]
    assert final["step"] == 24 and final["kl_divergence"] > 0 and "ce_loss_recovered" in final
    history = events.history(keys.training_channel(job.id))
    training = [e.payload for e in history if isinstance(e.payload, events.TrainingProgress)
                and e.payload.phase == "training"]
    carried = [p for p in training if "eval_step" in p.metrics]
    assert carried and {p.metrics["eval_step"] for p in carried} <= set(EVAL_STEPS)
    assert all(p.step >= p.metrics["eval_step"] and p.metrics["kl_divergence"] > 0 for p in carried)
    completed = history[-1].payload
    assert isinstance(completed, events.TrainingCompleted)
    assert {k: completed.final_metrics[k] for k in CAUSAL_METRICS} == {k: final[k] for k in CAUSAL_METRICS}

    monitor = TrainingMonitor(job)
    for event in history:
        monitor.apply(event)
    monitor.refresh()
    ce = monitor.trace("ce_loss_recovered")
    assert list(ce.x) == sorted(set(ce.x)) and set(ce.x) <= set(EVAL_STEPS) and ce.x[-1] == 24
    assert ce.y[-1] == pytest.approx(final["ce_loss_recovered"])
    assert "kl_divergence" in monitor.metrics_html.value and "eval at step 24" in monitor.metrics_html.value
    assert f"kl_divergence = {final['kl_divergence']:.4g}" in monitor.summary_html()

    with pytest.raises(InvalidInput) as info:  # refused before anything is queued
        jobs.submit("extract_features", {"training_id": job.id, "top_k": 3, "ablation_contexts": 4})
    assert info.value.field == "ablation_contexts"
    extraction = jobs.submit("extract_features", {"training_id": job.id, "top_k": 5, "ablation_contexts": 3})
    summary = extraction.result(timeout=240)
    assert summary["total_features"] == 256
    phases = {e.payload.phase for e in events.history(keys.features_channel(job.id))
              if isinstance(e.payload, events.FeaturesProgress)}
    assert "ablation" in phases

    browser = FeatureBrowser(job.id)
    for feature in feature_queries.ranking(job.id, "density")[:3]:
        browser.index.value = feature
        card = feature_queries.feature_card(job.id, feature)
        assert card["ablation"]["contexts"] == min(3, len(card["top_contexts"])) > 0
        body = browser.body.value
        assert "Promoted tokens" in body and "Suppressed tokens" in body and "Ablation effect" in body
        assert f"{card['ablation']['effect']:+.3g} nats" in body
