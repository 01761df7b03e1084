"""The extract_features job on a real gpu worker, the cached reads around its results, the
FeatureBrowser and the report: a bundled MiniLM run (an encoder, so no logits)."""

from __future__ import annotations

import json
import re

import pytest

from helpers import run_cli
from mistudio import cache, events, feature_queries, jobs
from mistudio.errors import InvalidInput
from mistudio.redis import keys
from mistudio.settings import get_settings

pytestmark = pytest.mark.timeout(300)

TRAINING_ID = "tr_featurejob"


@pytest.fixture(scope="module")
def trained(mistudio_home):
    """A MiniLM run with an exported SAE (no feature analysis yet) under MISTUDIO_HOME/runs."""
    from mistudio.training import prepare_and_train, prepare_config

    config = prepare_config({"steps": 20, "eval_every": 0, "checkpoint_every": 10, "log_every": 5, "device": "cpu"})
    run_dir = get_settings().runs_dir / TRAINING_ID
    prepare_and_train(config, run_dir, evaluate=False)
    return run_dir


@pytest.fixture(scope="module")
def extracted(trained, redis_server, tmp_path_factory):
    """The job run once on a real gpu worker through `mistudio features --wait --json`."""
    from helpers import WorkerProcs
    from mistudio.redis.connection import admin_client

    admin_client().flushall()
    for namespace, params in (("features", {}), ("correlations", {"k": 5}), ("checkpoints", {})):
        cache.get_or_compute(namespace, lambda: {"stale": True}, training_id=TRAINING_ID, **params)
    procs = WorkerProcs(tmp_path_factory.mktemp("feature-workers"))
    try:
        procs.start("gpu", lease=10)
        result = run_cli("features", TRAINING_ID, "--tokens", "1500", "--wait", "--json", timeout=240)
    finally:
        procs.stop_all()
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_validation_refuses_unknown_or_untrained_runs_before_queueing(redis_db, trained):
    with pytest.raises(InvalidInput) as info:
        jobs.submit("extract_features", {"training_id": "tr_nosuchrun"})
    assert info.value.field == "training_id" and "train" in str(info.value)
    unfinished = get_settings().runs_dir / "tr_unfinished"
    unfinished.mkdir(parents=True, exist_ok=True)
    (unfinished / "run.json").write_text("{}")
    with pytest.raises(InvalidInput) as info:
        jobs.submit("extract_features", {"training_id": "tr_unfinished"})
    assert info.value.field == "training_id" and "train first" in str(info.value)
    with pytest.raises(InvalidInput) as info:
        jobs.submit("extract_features", {"training_id": TRAINING_ID, "top_k": 0})
    assert info.value.field == "top_k"
    assert redis_db("results").zcard(keys.jobs_index()) == 0


def test_the_job_runs_on_a_gpu_worker_with_progress_events(extracted, trained):
    assert extracted["state"] == "succeeded", extracted
    job = jobs.get_job(extracted["job_id"])
    record = job.record()
    assert (record["queue"], record["priority"]) == ("gpu", 7) and job.id.startswith("fx_")
    result = extracted["result"]
    assert result["training_id"] == TRAINING_ID and result["total_features"] == 384 * 4
    assert 1500 <= result["n_tokens"] < 1500 + 64
    history = events.history(keys.features_channel(TRAINING_ID))
    progress = [e for e in history if e.type == "features.progress"]
    assert progress and all("done" in e.data and "total" in e.data for e in progress)
    assert progress[-1].data["done"] == progress[-1].data["total"]
    assert history[-1].type == "features.completed" and history[-1].data["status"] == "succeeded"
    assert history[-1].data["extraction_id"] == result["extraction_id"]
    # How well the SAE reconstructs the held-out text, in the result and the completed event alike.
    assert 0 < result["explained_variance"] < 1 and result["fvu"] == pytest.approx(1 - result["explained_variance"])
    assert history[-1].data["explained_variance"] == result["explained_variance"]
    assert (trained / "features" / "summary.json").is_file()


def test_the_job_invalidates_the_runs_cache(extracted):
    client = cache._client()
    assert not client.exists(f"cache:features:{TRAINING_ID}:stats", f"cache:correlations:{TRAINING_ID}:top5",
                             f"cache:checkpoints:{TRAINING_ID}:list")
    assert feature_queries.dictionary_stats(TRAINING_ID)["extraction_id"] == extracted["result"]["extraction_id"]


def test_cached_reads_use_the_seeds_keys_and_count_hits(extracted, trained):
    client = cache._client()
    for namespace in ("features", "correlations", "checkpoints", "model", "dataset"):
        cache.reset_stats(namespace)
    first = feature_queries.dictionary_stats(TRAINING_ID)
    assert feature_queries.dictionary_stats(TRAINING_ID) == first
    assert cache.stats("features")["hits"] >= 1 and cache.hit_rate("features") > 0
    assert first["total_features"] == 1536 and first["dead_neurons"] == first["dead_features"]
    assert 3590 <= client.ttl(f"cache:features:{TRAINING_ID}:stats") <= 3600

    corr = feature_queries.correlations(TRAINING_ID, k=10)
    assert len(corr["features"]) == 10 and len(corr["matrix"]) == 10 and corr["matrix"][0][0] == 1.0
    assert 7190 <= client.ttl(f"cache:correlations:{TRAINING_ID}:top10") <= 7200
    assert feature_queries.correlations(TRAINING_ID, k=10) == corr and cache.stats("correlations")["hits"] == 1

    steps = [c["step"] for c in feature_queries.checkpoints(TRAINING_ID)]
    assert steps and steps == sorted(steps) and steps[-1] == 20
    assert client.ttl(f"cache:checkpoints:{TRAINING_ID}:list") > 290

    info = feature_queries.overview(TRAINING_ID)
    assert info["model"]["d_model"] == 384 and info["model"]["has_lm_head"] is False
    assert client.type("cache:model:all-MiniLM-L6-v2:metadata") == "hash"
    assert info["dataset"]["total_tokens"] > 0
    assert client.exists(f"cache:dataset:{info['run']['dataset_id']}:stats")
    with pytest.raises(InvalidInput):
        feature_queries.run_dir("../etc")


def test_feature_browser_shows_a_card_and_reads_through_the_cache(extracted, trained):
    from mistudio.features import load_feature_table
    from mistudio.widgets import FeatureBrowser

    cache.reset_stats("api")
    browser = FeatureBrowser(TRAINING_ID)
    assert browser.feature == 0
    browser.index.value = 7
    assert browser.feature == 7 and "Feature 7" in browser.header.value
    card = browser.card.card
    figure = browser.figure.outputs[0]["data"]["application/vnd.plotly.v1+json"]
    assert figure["data"][0]["y"] == card["histogram"]["counts"]
    if card["top_contexts"]:
        assert "Top activating contexts" in browser.body.value
    assert "Promoted tokens" not in browser.body.value  # MiniLM has no LM head
    browser.index.value = 9
    browser.index.value = 7  # back again: a cache hit
    assert cache.stats("api")["hits"] >= 1

    browser.order.value = "density"
    ranking = feature_queries.ranking(TRAINING_ID, "density")
    table = [feature_queries.feature_card(TRAINING_ID, f)["density"] for f in ranking[:3]]
    assert table == sorted(table, reverse=True)
    assert browser.feature == ranking[0] and browser.rank.value == 0
    browser.rank.value = 2
    assert browser.feature == ranking[2]
    browser.next_button.click()
    assert browser.rank.value == 3 and browser.feature == ranking[3] and browser.index.value == ranking[3]
    browser.order.value = "max"
    assert browser.feature == int(load_feature_table(trained)["max"].idxmax())


def test_the_report_is_one_offline_html_file_with_the_plots(extracted, trained, tmp_path):
    out = tmp_path / "report.html"
    result = run_cli("report", TRAINING_ID, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    page = out.read_text()
    assert page.count("* plotly.js v") == 1  # plotly.js inline, once
    assert not re.search(r"<script[^>]+src=", page)  # nothing fetched from a CDN
    assert "Feature density" in page and "Co-activation" in page and "<h2>Training</h2>" in page
    counts = [c for c in feature_queries.dictionary_stats(TRAINING_ID)["frequency_histogram"]["counts"]]
    nonzero = [i for i, c in enumerate(counts) if c]
    assert '"y":' + json.dumps(counts[nonzero[0]:nonzero[-1] + 1]).replace(" ", "") in page  # the density bars
    assert page.count("Plotly.newPlot") >= 3 + 1  # curves, density, heatmap, and the cards' histograms
    assert len(re.findall(r">Feature \d+</div>", page)) == 8


def test_the_browser_opens_at_rank_0_of_its_order_and_co_active_features_open_on_click(extracted, trained):
    from plotly.callbacks import InputDeviceState, Points

    from mistudio.widgets import FeatureBrowser

    by_max = feature_queries.ranking(TRAINING_ID, "max")
    browser = FeatureBrowser(TRAINING_ID, order="max")
    assert browser.rank.value == 0 and browser.feature == by_max[0]
    assert FeatureBrowser(TRAINING_ID, order="max", feature=by_max[5]).rank.value == 5

    with_partners = next(f for f in by_max if feature_queries.feature_card(TRAINING_ID, f)["correlated"])
    browser.show(with_partners)
    partner = browser.card.correlated[0]["feature"]
    button = browser.correlated.children[1]  # after the section's title
    assert button.description.startswith(f"#{partner} ")
    button.click()
    assert browser.feature == partner and browser.rank.value == by_max.index(partner)
    assert browser.index.value == partner and f"Feature {partner}" in browser.header.value

    assert browser.heatmap is None  # drawn when its accordion opens
    browser.heatmap_box.selected_index = 0
    heat = browser.heatmap.data[0]
    column = heat.x[3]
    heat._dispatch_on_click(Points(point_inds=[[1, 3]], xs=[column], ys=[heat.y[1]], trace_name=heat.name,
                                   trace_index=0), InputDeviceState())  # what a click in the browser sends
    assert browser.feature == int(column.lstrip("#"))


def test_the_report_shows_the_most_frequent_non_dense_features_and_lists_the_dense_ones(extracted, trained):
    from mistudio.features import load_feature_table, load_summary
    from mistudio.report import build_report, pick_features

    summary = load_summary(trained)
    table = load_feature_table(trained)
    chosen, dense = pick_features(table, 8, summary["dense_threshold"])
    density = dict(zip(table["feature"], table["density"]))
    assert len(chosen) == 8 and all(0 < density[f] <= summary["dense_threshold"] for f in chosen)
    assert [d["feature"] for d in dense] == [int(f) for f in table["feature"][table["density"] > 0.1]
                                             .sort_values(key=lambda s: -s.map(density), kind="stable")]
    page = build_report(trained)
    assert "most frequent features (not dense)" in page
    assert re.findall(r">Feature (\d+)</div>", page) == [str(f) for f in chosen]
    if dense:
        assert f"Dense features ({len(dense)})" in page and all(f"#{d['feature']} <small>" in page for d in dense)
    else:
        assert "No feature is dense." in page
    assert "finished: 20 steps" in page
    assert ">final<" in page and "did not finish" not in page


def test_the_report_of_a_cancelled_run_says_so_and_calls_nothing_final(redis_db, trained):
    from mistudio.report import build_report, write_report
    from mistudio.training import prepare_and_train, prepare_config

    config = prepare_config({"steps": 40, "eval_every": 0, "checkpoint_every": 100, "log_every": 5, "device": "cpu"})
    run_dir = get_settings().runs_dir / "tr_stopped"
    polls = []
    prepare_and_train(config, run_dir, evaluate=False, should_stop=lambda: polls.append(1) or len(polls) > 12)
    assert not (run_dir / "sae").exists()

    page = build_report(run_dir)  # the folder alone: it stopped, and where
    assert "did not finish: stopped before the end (cancelled or interrupted) at step 10 of 40 (25 %)" in page
    assert "last logged (step 10)" in page and ">final<" not in page and "10 of 40 steps" in page
    assert "mistudio retry tr_stopped" in page

    job = jobs.submit("train_sae", {"steps": 40}, job_id="tr_stopped")
    job.cancel()  # no worker: cancelled while queued, as the record tells the report
    text = write_report("tr_stopped").read_text()
    assert "cancelled at step 10 of 40 (25 %): no SAE was exported" in text
