"""Causal metrics through the real training path: a tiny training on the tiny random GPT-2 reports
CE-loss recovered and KL divergence at its eval steps, in its final metrics, in the SAELens
export's metadata, in the report and in the training curves."""

from __future__ import annotations

import json
import math

import pytest

from ml_helpers import save_tiny_gpt2

pytestmark = pytest.mark.timeout(180)

CAUSAL = ("ce_loss_recovered", "kl_divergence", "ce_clean", "ce_spliced", "ce_zero")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from mistudio.training import prepare_and_train, prepare_config

    root = tmp_path_factory.mktemp("causal")
    config = prepare_config({"model": str(save_tiny_gpt2(root / "gpt2")), "steps": 24, "batch_size": 256,
                             "expansion_factor": 4, "k": 8, "checkpoint_every": 24, "log_every": 4, "eval_every": 8,
                             "device": "cpu"}, layer=1)
    run_dir = root / "runs" / "tr_causal"
    reports = []
    final = prepare_and_train(config, run_dir, progress=reports.append)
    return run_dir, final, reports


def test_eval_steps_report_ce_loss_recovered_and_kl(trained):
    _, final, reports = trained
    evals = [r for r in reports if "kl_divergence" in r]
    assert [r["step"] for r in evals] == [8, 16, 24]
    for r in evals:
        assert r["kl_divergence"] > 0 and math.isfinite(r["kl_divergence"])
        assert r["ce_loss_recovered"] == pytest.approx((r["ce_zero"] - r["ce_spliced"]) / (r["ce_zero"] - r["ce_clean"]))
    assert evals[0]["ce_clean"] == evals[-1]["ce_clean"]  # the clean model is measured once
    assert all(final[k] == evals[-1][k] for k in CAUSAL)  # the final metrics are the last eval's


def test_the_export_metadata_carries_the_final_causal_metrics(trained):
    run_dir, final, _ = trained
    cfg = json.loads((run_dir / "sae" / "cfg.json").read_text())
    stored = cfg["metadata"]["mistudio_metrics"]
    assert {k: stored[k] for k in CAUSAL} == {k: final[k] for k in CAUSAL}
    assert stored["step"] == 24 and stored["explained_variance"] == final["explained_variance"]


def test_the_report_and_the_curves_show_them(trained):
    from mistudio.report import build_report, read_history
    from mistudio.views.training import causal_text, curves_for, training_curves

    run_dir, final, _ = trained
    page = build_report(run_dir)
    assert "causal (held-out)" in page and html_text(causal_text(final)) in page
    assert f"CE-loss recovered {final['ce_loss_recovered']:.3g}" in page
    assert f"KL {final['kl_divergence']:.3g} nats/token" in page
    fig = training_curves(read_history(run_dir), architecture="topk")
    index = [key for key, _, _ in curves_for("topk")].index("ce_loss_recovered")
    assert list(fig.data[index].x) == [8, 16, 24]


def html_text(text: str) -> str:
    import html

    return html.escape(text)
