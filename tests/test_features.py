"""Feature analysis against brute force: a tiny GPT-2 (with an LM head), a TopK SAE trained on it,
and every statistic recomputed from the dense latents of all held-out tokens at once."""

from __future__ import annotations

import html
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from mistudio.errors import InvalidInput
from mistudio.features import (
    extract_features,
    load_correlation_matrix,
    load_feature,
    load_feature_table,
    load_summary,
    results_dir,
)
from mistudio.features.correlations import PairCounter
from mistudio.features.logits import unembedding
from mistudio.sae.checkpoint import CommitRefused
from ml_helpers import save_tiny_gpt2, tiny_model

pytestmark = pytest.mark.timeout(180)

TOP_K, WINDOW, RESERVOIR = 5, 3, 32


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained run (tiny GPT-2, TopK k=8, d_sae=256) and its feature analysis."""
    from mistudio.training import prepare_and_train, prepare_config

    root = tmp_path_factory.mktemp("features")
    model_dir = save_tiny_gpt2(root / "gpt2")
    config = prepare_config({"model": str(model_dir), "steps": 30, "batch_size": 256, "expansion_factor": 4, "k": 8,
                             "checkpoint_every": 30, "log_every": 10, "eval_every": 0, "device": "cpu"}, layer=1)
    run_dir = root / "runs" / "tr_features"
    prepare_and_train(config, run_dir, evaluate=False)
    reports = []
    summary = extract_features(run_dir, top_k=TOP_K, context_window=WINDOW, reservoir_size=RESERVOIR,
                               matrix_size=20, progress=reports.append)
    return run_dir, summary, reports


@pytest.fixture(scope="module")
def brute(run):
    """Dense latents [contexts, T, d_sae] of every held-out token, zero where a token does not count."""
    from mistudio.data.processed import ProcessedDataset
    from mistudio.models.hooks import capture_activations
    from mistudio.models.loading import load_model
    from mistudio.sae.export import load_sae
    from mistudio.runs import RunFolder

    run_dir, summary, _ = run
    info = RunFolder(run_dir).read_info()
    start, stop = info["holdout_contexts"]
    tokens = ProcessedDataset.load(info["dataset_path"]).tokens
    model = load_model(info["model"], device="cpu")
    sae = load_sae(run_dir / "sae")
    ids, attn, mask = (t[start:stop] for t in (tokens.input_ids, tokens.attention_mask, tokens.activation_mask))
    acts = capture_activations(model, [info["hook_point"]], ids, attn)[info["hook_point"]]
    with torch.no_grad():
        z = (sae.encode(acts) * mask[..., None]).double()
    return {"z": z, "mask": mask, "ids": ids, "attn": attn, "start": start, "model": model, "sae": sae,
            "n_tokens": int(mask.sum())}


def test_statistics_equal_a_brute_force_computation(run, brute):
    run_dir, summary, _ = run
    z = brute["z"].reshape(-1, brute["z"].shape[-1])
    n = brute["n_tokens"]
    fired = (z > 0).sum(dim=0)
    table = load_feature_table(run_dir)
    assert list(table["feature"]) == list(range(256))
    assert summary["n_tokens"] == n
    np.testing.assert_array_equal(table["count"], fired.numpy())
    np.testing.assert_allclose(table["density"], (fired / n).numpy())
    np.testing.assert_allclose(table["max"], z.max(dim=0).values.numpy(), rtol=1e-6)
    live = fired > 0
    mean = (z.sum(dim=0) / fired.clamp_min(1)).numpy()
    np.testing.assert_allclose(table["mean"][live.numpy()], mean[live.numpy()], rtol=1e-6)
    assert table["mean"][~live.numpy()].isna().all()


def test_histograms_count_every_nonzero_activation_in_fixed_log_bins(run, brute):
    run_dir, summary, _ = run
    spec = summary["histogram_bins"]
    inner = 10.0 ** np.linspace(spec["log10_low"], spec["log10_high"], spec["n_bins"] - 1)
    z = brute["z"].reshape(-1, brute["z"].shape[-1]).numpy()
    for feature in range(0, 256, 17):
        values = z[:, feature][z[:, feature] > 0]
        expected = np.concatenate([[np.sum(values < inner[0])], np.histogram(values, bins=inner)[0],
                                   [np.sum(values >= inner[-1])]])
        card = load_feature(run_dir, feature)
        hist = card["histogram"]
        got = np.zeros(spec["n_bins"], dtype=np.int64)
        got[hist["first_bin"]:hist["first_bin"] + len(hist["counts"])] = hist["counts"]
        np.testing.assert_array_equal(got, expected, err_msg=f"feature {feature}")
        assert sum(hist["counts"]) == card["count"]
        if hist["counts"]:
            assert len(hist["edges"]) == len(hist["counts"]) + 1
            assert hist["edges"][0] <= values.min() and values.max() <= hist["edges"][-1]


def _window(brute, ctx, pos, feature):
    """The +-WINDOW tokens around (ctx, pos) that exist, their ids and that feature's activations."""
    length = brute["z"].shape[1]
    positions = [p for p in range(pos - WINDOW, pos + WINDOW + 1) if 0 <= p < length and brute["attn"][ctx, p]]
    return positions, [int(brute["ids"][ctx, p]) for p in positions], [float(brute["z"][ctx, p, feature]) for p in positions]


def test_a_repeated_window_is_kept_once_the_best_of_it_first():
    from mistudio.features.examples import distinct_examples

    a, b, c = [5, 6, 7], [5, 6, 8], [9, 9, 9]
    rows = {"feature": np.array([0, 0, 0, 0, 1, 1]), "rank": np.arange(6), "value": np.array([4.34, 4.32, 4.0, 3.0, 2.0, 1.0]),
            "token_ids": np.array([a, a, b, c, a, a]), "keep": np.ones((6, 3), dtype=bool)}
    rows["keep"][3, 0] = False  # c without its first token: still its own text
    out = distinct_examples(rows, limit=2)
    assert out["value"].tolist() == [4.34, 4.0, 2.0]  # feature 0: a (best copy), b; then the limit
    assert out["feature"].tolist() == [0, 0, 1] and out["rank"].tolist() == [0, 1, 0]
    masked = dict(rows, keep=np.array([[False, True, True]] * 2 + [[True] * 3] * 4))
    assert distinct_examples(masked, limit=5)["value"].tolist() == [4.34, 4.0, 3.0, 2.0]  # same shown text


def test_top_contexts_are_the_k_best_contexts_with_their_windows(run, brute):
    run_dir, _, _ = run
    tokenizer = brute["model"].tokenizer
    peak, peak_pos = brute["z"].max(dim=1)  # [contexts, d_sae]
    checked = 0
    for feature in range(256):
        order = torch.argsort(peak[:, feature], descending=True)
        expected, windows = [], set()
        for c in order:  # the best contexts, a window's text once (a repeated sentence is one example)
            shown = tuple(_window(brute, int(c), int(peak_pos[c, feature]), feature)[1])
            if peak[c, feature] > 0 and shown not in windows and len(expected) < TOP_K:
                expected.append((int(c), float(peak[c, feature])))
                windows.add(shown)
        card = load_feature(run_dir, feature)
        got = card["top_contexts"]
        assert [v for _, v in expected] == pytest.approx([g["value"] for g in got], rel=1e-5)
        for g in got:  # (near-ties may swap places between batchings: check each context's own peak)
            assert float(peak[g["context"] - brute["start"], feature]) == pytest.approx(g["value"], rel=1e-5)
        for g in got[:2]:
            ctx = g["context"] - brute["start"]
            assert g["position"] == int(peak_pos[ctx, feature])
            positions, ids, acts = _window(brute, ctx, g["position"], feature)
            assert g["tokens"] == [tokenizer.decode([i]) for i in ids]
            assert g["acts"] == pytest.approx(acts, rel=1e-5, abs=1e-7)
            assert g["acts"][g["peak"]] == pytest.approx(g["value"]) and positions[g["peak"]] == g["position"]
            checked += 1
    assert checked > 100


def test_quantile_samples_are_real_tokens_at_the_activation_quantiles(run, brute):
    run_dir, summary, _ = run
    z = brute["z"]
    exact = 0
    for feature in range(0, 256, 3):
        card = load_feature(run_dir, feature)
        samples = card["quantile_samples"]
        values = z[..., feature][z[..., feature] > 0].sort().values
        assert bool(samples) == bool(values.numel())
        for s in samples:
            ctx = s["context"] - brute["start"]
            assert float(z[ctx, s["position"], feature]) == pytest.approx(s["value"], rel=1e-6)
            assert s["acts"] == pytest.approx(_window(brute, ctx, s["position"], feature)[2], rel=1e-5, abs=1e-7)
        if 0 < values.numel() <= RESERVOIR:  # the reservoir holds every activation: exact nearest-rank quantiles
            # One sample per nearest rank: quantiles that land on the same rank share it; two equal
            # activations of different tokens (a tie) are two ranks, so two samples.
            expected, ranks = [], []
            for q in summary["quantiles"]:
                rank = int(np.floor(q * (values.numel() - 1) + 0.5))
                if not ranks or ranks[-1] != rank:
                    expected.append((q, float(values[rank])))
                    ranks.append(rank)
            assert [(s["quantile"], s["value"]) for s in samples] == [(q, pytest.approx(v)) for q, v in expected]
            exact += 1
        elif values.numel():
            assert len(samples) == len(summary["quantiles"])
            assert [s["value"] for s in samples] == sorted(s["value"] for s in samples)
    assert exact > 0


def test_correlations_are_phi_coefficients_of_co_activation(run, brute):
    run_dir, summary, _ = run
    fired = (brute["z"].reshape(-1, 256) > 0).double()
    n = brute["n_tokens"]
    co = fired.t() @ fired
    count = fired.sum(dim=0)
    den = torch.sqrt(count * (n - count))
    phi = (n * co - count[:, None] * count[None, :]) / (den[:, None] * den[None, :])
    for feature in range(0, 256, 9):
        card = load_feature(run_dir, feature)
        partners = [c["feature"] for c in card["correlated"]]
        assert feature not in partners
        candidates = [(float(phi[feature, j]), int(co[feature, j]), j) for j in range(256)
                      if j != feature and co[feature, j] > 0]
        best = sorted(candidates, key=lambda t: (-t[0], -t[1]))[:10]
        assert [c["phi"] for c in card["correlated"]] == pytest.approx([b[0] for b in best], abs=1e-5)
        for c in card["correlated"]:
            assert c["co_count"] == int(co[feature, c["feature"]])
            assert c["phi"] == pytest.approx(float(phi[feature, c["feature"]]), abs=1e-5)
    heat = load_correlation_matrix(run_dir)
    top = torch.argsort(count, descending=True, stable=True)[:20].tolist()
    assert heat["features"] == top == summary["correlation_features"]
    expected = phi[top][:, top].clone()
    expected.fill_diagonal_(1.0)
    np.testing.assert_allclose(np.array(heat["matrix"]), expected.numpy(), atol=1e-5)
    assert load_correlation_matrix(run_dir, k=5)["matrix"] == [row[:5] for row in heat["matrix"][:5]]
    with pytest.raises(InvalidInput) as info:
        load_correlation_matrix(run_dir, k=21)
    assert info.value.field == "k"


def test_pair_counts_match_a_dense_count_for_variable_activity():
    torch.manual_seed(0)
    acts = torch.rand(300, 40) * (torch.rand(300, 40) < 0.15)  # 0..~14 active features per token, like a ReLU SAE
    counter = PairCounter(40)
    for chunk in acts.split(37):
        rows, feats = chunk.nonzero(as_tuple=True)
        counter.add(rows, feats)
    i, j, n_ij = counter.pairs()
    fired = (acts > 0).long()
    co = fired.t() @ fired
    dense = {(a, b): int(co[a, b]) for a in range(40) for b in range(a + 1, 40) if co[a, b]}
    assert dict(zip(zip(i.tolist(), j.tolist()), n_ij.tolist())) == dense


def test_logits_go_through_the_unembedding(run, brute):
    run_dir, summary, _ = run
    assert summary["has_logits"]
    W_U = brute["model"].model.get_output_embeddings().weight
    logits = brute["sae"].W_dec @ W_U.t()
    tokenizer = brute["model"].tokenizer
    for feature in (0, 7, 200):
        card = load_feature(run_dir, feature)
        top = logits[feature].topk(10)
        bottom = logits[feature].topk(10, largest=False)
        assert [t["token_id"] for t in card["logits"]["positive"]] == top.indices.tolist()
        assert [t["value"] for t in card["logits"]["positive"]] == pytest.approx(top.values.tolist(), rel=1e-5)
        assert [t["token_id"] for t in card["logits"]["negative"]] == bottom.indices.tolist()
        assert card["logits"]["negative"][0]["token"] == tokenizer.decode([bottom.indices[0].item()])


def test_each_feature_is_ablated_on_its_top_contexts(run, brute):
    """The stored effect of a context equals a direct splice x - a_f * W_dec[f] through the model."""
    import torch.nn.functional as F

    from mistudio.models.hooks import patch_activation
    from mistudio.runs import RunFolder

    run_dir, summary, reports = run
    assert summary["has_ablation"] and summary["ablation_contexts"] == 5 and summary["ablation_window"] == WINDOW
    ablation = [r for r in reports if r["phase"] == "ablation"]
    assert ablation and ablation[-1]["done"] == ablation[-1]["total"] > 0
    hook, sae, model = RunFolder(run_dir).read_info()["hook_point"], brute["sae"], brute["model"]
    z = brute["z"]
    live = [f for f in torch.argsort(-(z > 0).sum(dim=(0, 1))).tolist()[:40:8]]
    for f in live:
        card = load_feature(run_dir, f)
        measured = [ex for ex in card["top_contexts"] if "ablation" in ex]

        def predicts_after(ex) -> bool:  # a token to predict in the window: a peak on a context's last token has none
            a = brute["attn"][ex["context"] - brute["start"]]
            return any(bool(a[t] and a[t + 1]) for t in range(ex["position"], min(ex["position"] + WINDOW + 1, a.numel() - 1)))

        assert measured == [ex for ex in card["top_contexts"][:5] if predicts_after(ex)]
        assert len(measured) == card["ablation"]["contexts"] > 0
        assert all("ablation" not in ex for ex in card["top_contexts"][5:])
        ex = measured[0]
        c = ex["context"] - brute["start"]
        ids, attn, mask = brute["ids"][c : c + 1].long(), brute["attn"][c : c + 1], brute["mask"][c : c + 1]

        def ablate(act):
            return act - (sae.encode(act)[..., f] * mask)[..., None] * sae.W_dec[f]

        with torch.no_grad():
            clean = model.model(ids, attention_mask=attn).logits[0, :-1]
            with patch_activation(model, hook, ablate):
                ablated = model.model(ids, attention_mask=attn).logits[0, :-1]
        delta = F.cross_entropy(ablated, ids[0, 1:], reduction="none") - F.cross_entropy(clean, ids[0, 1:],
                                                                                          reduction="none")
        real = (attn[0, 1:] * attn[0, :-1]).bool()
        p = ex["position"]
        chosen = [t for t in range(p, p + WINDOW + 1) if t < real.numel() and real[t]]
        if chosen:
            assert ex["ablation"] == pytest.approx(float(delta[chosen].mean()), rel=1e-3, abs=1e-6)
        values = [e["ablation"] for e in measured]
        assert card["ablation"]["effect"] == pytest.approx(float(np.mean(values)), rel=1e-4, abs=1e-7)
    dead = [f for f in range(256) if not load_feature(run_dir, f)["top_contexts"]]
    for f in dead[:3]:
        assert load_feature(run_dir, f)["ablation"] == {"effect": None, "peak": None, "contexts": 0, "window": WINDOW}


def test_every_card_of_a_causal_lm_shows_logits_and_the_ablation_effect(run):
    from mistudio.views import feature_card

    run_dir, _, _ = run
    for f in range(256):
        body = feature_card(load_feature(run_dir, f)).body_html
        assert "Promoted tokens" in body and "Suppressed tokens" in body and "Ablation effect" in body, f
        assert ("nats</span> next-token loss" in body) != ("not measured" in body)


def test_an_encoder_without_lm_head_has_no_logits():
    assert unembedding(tiny_model("bert", causal_lm=False)) is None
    for decoder in ("gpt2", "llama"):
        assert unembedding(tiny_model(decoder)).shape == (512, 64)


def test_the_dictionary_summary(run, brute):
    run_dir, summary, reports = run
    fired = (brute["z"].reshape(-1, 256) > 0).sum(dim=0)
    density = fired / brute["n_tokens"]
    assert load_summary(run_dir) == {"format": "mistudio.features", "version": 1, **summary}
    assert summary["total_features"] == 256
    assert summary["dead_features"] == summary["dead_neurons"] == int((fired == 0).sum())
    assert summary["dense_features"] == int((density > summary["dense_threshold"]).sum())
    assert summary["avg_activation_frequency"] == pytest.approx(float(density.mean()))
    assert summary["mean_l0"] == pytest.approx(float(fired.sum()) / brute["n_tokens"])
    hist = summary["frequency_histogram"]
    assert sum(hist["counts"]) + hist["dead"] == 256 and len(hist["edges"]) == len(hist["counts"]) + 1
    assert reports[0]["done"] == 0 and reports[-1]["done"] == reports[-1]["total"] == summary["n_contexts"]
    assert {r["phase"] for r in reports} >= {"extracting", "writing"}


def test_the_held_out_explained_variance_is_one_minus_sse_over_sst_around_the_held_out_mean(run, brute):
    from mistudio.models.hooks import capture_activations
    from mistudio.runs import RunFolder

    run_dir, summary, _ = run
    info = RunFolder(run_dir).read_info()
    acts = capture_activations(brute["model"], [info["hook_point"]], brute["ids"], brute["attn"])[info["hook_point"]]
    counted = brute["mask"].bool()
    x = acts[counted].double()
    with torch.no_grad():
        recon = brute["sae"].decode(brute["sae"].encode(acts[counted])).double()
    fvu = float((recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert 0 < fvu < 1  # a trained SAE: better than the mean, short of perfect
    assert summary["fvu"] == pytest.approx(fvu, rel=1e-4)
    assert summary["explained_variance"] == pytest.approx(1 - fvu, rel=1e-4)


def test_a_small_memory_budget_gives_the_same_results(run, monkeypatch, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    run_dir, summary, _ = run
    copy = tmp_path / "tr_small_budget"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("features"))
    monkeypatch.setenv("MISTUDIO_MEMORY_BUDGET", str(64 * 1024))  # one context per batch
    small = extract_features(copy, top_k=TOP_K, context_window=WINDOW, reservoir_size=RESERVOIR, matrix_size=20,
                             ablation_contexts=0)  # ablation batching: tests/test_features_ablation.py
    assert small["batch_contexts"] == 1 < summary["batch_contexts"]
    # Another batching changes float rounding (~1e-7), so near-ties may swap; nothing else may differ.
    a, b = (pq.read_table(results_dir(d) / "features.parquet").to_pandas() for d in (copy, run_dir))
    np.testing.assert_array_equal(a["count"], b["count"])
    np.testing.assert_allclose(a[["mean", "max"]].fillna(0), b[["mean", "max"]].fillna(0), rtol=1e-5)
    a, b = (pq.read_table(results_dir(d) / "examples.parquet").to_pandas() for d in (copy, run_dir))
    assert list(a["feature"]) == list(b["feature"]) and list(a["kind"]) == list(b["kind"])
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-5)
    assert ((a["context"] == b["context"]) & (a["position"] == b["position"])).mean() > 0.97
    a, b = (load_correlation_matrix(d) for d in (copy, run_dir))
    assert a["features"] == b["features"]
    np.testing.assert_allclose(a["matrix"], b["matrix"], atol=1e-6)


def test_n_tokens_limits_the_held_out_tokens(run, tmp_path):
    import shutil

    run_dir, summary, _ = run
    copy = tmp_path / "tr_few_tokens"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("features"))
    few = extract_features(copy, n_tokens=100, top_k=TOP_K, context_window=WINDOW, ablation_contexts=0)
    assert 100 <= few["n_tokens"] < summary["n_tokens"] and few["n_contexts"] <= 2


def test_results_are_committed_whole_or_not_at_all(run, tmp_path):
    import shutil

    run_dir, _, _ = run
    copy = tmp_path / "tr_commit"
    shutil.copytree(run_dir, copy)
    before = load_summary(copy)["extraction_id"]
    with pytest.raises(CommitRefused):
        extract_features(copy, top_k=TOP_K, context_window=WINDOW, before_commit=lambda: False)
    assert load_summary(copy)["extraction_id"] == before
    assert sorted(p.name for p in copy.iterdir() if p.name.startswith(".")) == []
    assert extract_features(copy, should_stop=lambda: True)["stopped"] is True
    assert load_summary(copy)["extraction_id"] == before
    after = extract_features(copy, top_k=TOP_K, context_window=WINDOW, before_commit=lambda: True)
    assert load_summary(copy)["extraction_id"] == after["extraction_id"] != before


def test_bad_requests_name_the_field(run, tmp_path):
    run_dir, _, _ = run
    with pytest.raises(InvalidInput) as info:
        extract_features(tmp_path / "tr_nothing_here")
    assert info.value.field == "training_id"
    with pytest.raises(InvalidInput) as info:
        load_summary(tmp_path)
    assert info.value.field == "training_id" and "mistudio features" in str(info.value)
    with pytest.raises(InvalidInput) as info:
        load_feature(run_dir, 256)
    assert info.value.field == "feature"
    with pytest.raises(InvalidInput) as info:
        extract_features(run_dir, top_k=0)
    assert info.value.field == "top_k"
    with pytest.raises(InvalidInput) as info:
        extract_features(run_dir, ablation_contexts=-1)
    assert info.value.field == "ablation_contexts"


# --- views -------------------------------------------------------------------------------------


class _Spans(HTMLParser):
    """The token spans of a card (those with a title: the activation) and their text."""

    def __init__(self):
        super().__init__()
        self.spans, self._open = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "span" and "title" in attrs and "rgba(255,127,14" in attrs.get("style", ""):
            self._open = {"act": float(attrs["title"]), "style": attrs["style"], "text": ""}

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._open is not None:
            self.spans.append(self._open)
            self._open = None


def test_the_density_histogram_covers_the_live_features(run):
    from mistudio.views import density_histogram

    _, summary, _ = run
    fig = density_histogram(summary)
    bars = fig.data[0]
    assert sum(bars.y) == summary["total_features"] - summary["dead_features"]
    assert all(-8 <= x <= 0 for x in bars.x)
    assert "Feature density" in fig.layout.title.text and f"{summary['dead_features']:,} dead" in fig.layout.title.text
    assert len(fig.to_json()) < 20_000  # small when saved in a notebook


def test_a_feature_card_shades_tokens_and_lists_logits_and_correlates(run):
    from mistudio.views import FeatureCard, feature_card

    run_dir, _, _ = run
    data = max((load_feature(run_dir, f) for f in range(0, 256, 5)), key=lambda c: len(c["correlated"]))
    card = feature_card(data, n_contexts=3)
    assert isinstance(card, FeatureCard) and card.feature == data["feature"]
    hist = card.histogram
    assert list(hist.data[0].y) == data["histogram"]["counts"]
    assert f"Feature {data['feature']}" in hist.layout.title.text and "density" in hist.layout.title.text
    page = card.to_html()
    assert "plotly.js v" not in page and "Plotly.newPlot" in page  # the host page brings plotly.js once
    parser = _Spans()
    parser.feed(card.body_html)
    shown = data["top_contexts"][:3] + data["quantile_samples"]
    assert len(parser.spans) == sum(len(ex["tokens"]) for ex in shown)
    first = parser.spans[:len(shown[0]["tokens"])]
    assert [s["act"] for s in first] == pytest.approx(shown[0]["acts"], rel=1e-3, abs=1e-6)
    peak = first[shown[0]["peak"]]
    assert "font-weight:700" in peak["style"] and peak["act"] == pytest.approx(shown[0]["value"], rel=1e-3)
    assert [s["text"] for s in first] == [t.replace("\n", "↵") or "∅" for t in shown[0]["tokens"]]
    assert "Promoted tokens" in card.body_html and "Suppressed tokens" in card.body_html
    for item in data["logits"]["positive"][:3]:
        assert html_escape(item["token"]) in card.body_html
    for other in data["correlated"][:3]:
        assert f"#{other['feature']} <small>phi {other['phi']:.2f}</small>" in card.correlated_html
    assert "<a " not in card.correlated_html and card.correlated_html in page
    target = data["correlated"][0]["feature"]
    linked = feature_card(data, feature_href=lambda f: f"#feature-{f}" if f == target else None)
    assert linked.correlated_html.count("<a href=") == 1 and f"href='#feature-{target}'" in linked.correlated_html
    assert f"id='feature-{data['feature']}'" in linked.to_html(anchor=True)


def test_contexts_are_left_aligned_rows_that_notebook_table_css_cannot_reflow(run):
    from mistudio.views import feature_card

    run_dir, _, _ = run
    card = feature_card(load_feature(run_dir, int(load_feature_table(run_dir)["count"].idxmax())))
    assert "<td" not in card.body_html and "<table" not in card.body_html  # Lab right-aligns and fixes table cells
    assert card.body_html.count("text-align:left") >= 2 * len(card.card["top_contexts"][:10])


@pytest.mark.parametrize("lo, hi, expected", [
    (-0.35, 0.5, [0.5, 1, 2]),       # under one decade: 1-2-5 steps (it showed just "1")
    (0.30, 0.62, [2, 3, 4]),         # narrower: every digit
    (0.1, 0.45, [1.5, 2, 2.5]),      # narrower than a digit step: round values
    (-3.2, 1.1, [0.001, 0.01, 0.1, 1, 10]),  # several decades: the decades
])
def test_histogram_ticks_are_several_for_any_range(lo, hi, expected):
    from mistudio.views.features import log_ticks

    assert log_ticks(lo, hi) == pytest.approx(expected)


def html_escape(text: str) -> str:
    return html.escape(text.replace("\n", "↵"))


def test_a_dead_feature_card_says_so():
    from mistudio.views import feature_card

    card = feature_card({"feature": 3, "count": 0, "density": 0.0, "mean": None, "max": 0.0, "n_tokens": 100,
                         "histogram": {"edges": [], "counts": [], "first_bin": 0}, "top_contexts": [],
                         "quantile_samples": [], "logits": None, "correlated": []})
    assert "dead" in card.body_html and list(card.histogram.data[0].y) == []


def test_the_correlation_heatmap(run):
    from mistudio.views import correlation_heatmap

    run_dir, summary, _ = run
    corr = load_correlation_matrix(run_dir, k=8)
    fig = correlation_heatmap(corr)
    heat = fig.data[0]
    assert [list(r) for r in heat.z] == corr["matrix"]
    assert list(heat.x) == [f"#{f}" for f in summary["correlation_features"][:8]] == list(heat.y)
    assert (heat.zmin, heat.zmax) == (-1, 1)
