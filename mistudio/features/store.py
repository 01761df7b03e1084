"""Feature-analysis results on disk, under runs/{training_id}/features/:

  summary.json          the dictionary summary, the settings used, the histogram bin definition
  features.parquet      one row per feature: count, density, mean, max, histogram (trimmed:
                        hist_start + hist_counts), top +/- logits (ids, values), top correlated
                        features (feature, phi, co-occurrence count); for a causal LM the
                        ablation effect (ablation_effect, ablation_effect_peak, ablation_contexts:
                        see features/ablation.py)
  examples.parquet      one row per example: feature, kind ("top" | "quantile"), rank, quantile,
                        value, context (index in the processed dataset), position, start (first
                        position of the window), token_ids and acts (that feature, per token);
                        with ablation, its effect on that context (nan where not ablated)
  correlations.parquet  phi between the most frequent features (row order = summary's
                        correlation_features), for the heatmap
  vocab.parquet         display text of every token id used above

Parquet files are sorted by feature with small row groups, so reading one feature's card reads
one row group. The folder is written as a whole in a temp folder, offered to `before_commit`, then
renamed into place: readers see the old results or the new ones, never a mix.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mistudio.errors import InvalidInput
from mistudio.features import histogram
from mistudio.runs import FEATURE_TABLE, RunFolder
from mistudio.sae.checkpoint import commit_dir

FORMAT, VERSION = "mistudio.features", 1
FEATURE_COLUMNS = ("feature", "count", "density", "mean", "max")


def results_dir(run_dir: Path | str) -> Path:
    return RunFolder(run_dir).features


def has_results(run_dir: Path | str) -> bool:
    return (results_dir(run_dir) / "summary.json").is_file()


def list_array(offsets: np.ndarray, values: np.ndarray, type_: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, type=type_))


def ragged(matrix: np.ndarray, keep: np.ndarray, type_: pa.DataType) -> pa.Array:
    """Row i keeps matrix[i, keep[i]] (row-major) as a list."""
    offsets = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    return list_array(offsets, matrix[keep], type_)


def grouped(feature: np.ndarray, values: np.ndarray, d_sae: int, type_: pa.DataType) -> pa.Array:
    """Lists per feature 0..d_sae-1 from rows already sorted by feature."""
    offsets = np.searchsorted(feature, np.arange(d_sae + 1), side="left")
    return list_array(offsets, values, type_)


def feature_table(count, total_tokens: int, mean, max_, hist, logits=None, correlated=None) -> pa.Table:
    """count/mean/max [d_sae], hist [d_sae, bins] (numpy); logits: (pos values, pos ids, neg values,
    neg ids) [d_sae, top] or None; correlated: (feature, partner, phi, co_count) sorted by feature."""
    d_sae = count.shape[0]
    nonzero = hist > 0
    any_ = nonzero.any(axis=1)
    first = np.where(any_, nonzero.argmax(axis=1), 0)
    last = np.where(any_, hist.shape[1] - 1 - nonzero[:, ::-1].argmax(axis=1), -1)
    cols = np.arange(hist.shape[1])[None, :]
    columns = {
        "feature": pa.array(np.arange(d_sae, dtype=np.int32)),
        "count": pa.array(count.astype(np.int64)),
        "density": pa.array(count / max(1, total_tokens)),
        "mean": pa.array(mean.astype(np.float64)),
        "max": pa.array(max_.astype(np.float32)),
        "hist_start": pa.array(first.astype(np.int16)),
        "hist_counts": ragged(hist, (cols >= first[:, None]) & (cols <= last[:, None]), pa.int64()),
    }
    if logits is not None:
        top = logits[0].shape[1]
        offsets = np.arange(d_sae + 1) * top
        for name, values, type_ in zip(("pos_logit_values", "pos_logit_ids", "neg_logit_values", "neg_logit_ids"),
                                       logits, (pa.float32(), pa.int32(), pa.float32(), pa.int32())):
            columns[name] = list_array(offsets, np.asarray(values).reshape(-1), type_)
    if correlated is not None:
        feat, partner, phi, co = correlated
        columns["corr_features"] = grouped(feat, partner.astype(np.int32), d_sae, pa.int32())
        columns["corr_phi"] = grouped(feat, phi.astype(np.float32), d_sae, pa.float32())
        columns["corr_counts"] = grouped(feat, co.astype(np.int64), d_sae, pa.int64())
    return pa.table(columns)


def examples_table(parts: list[dict]) -> pa.Table:
    """parts: dicts of equal-length numpy columns feature, kind, rank, quantile, value, context,
    position, start, and token_ids / acts / keep [n, W] (keep: which window tokens exist)."""
    cat = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    kind_code = (cat["kind"] == "quantile").astype(np.int8)
    order = np.lexsort((cat["rank"], kind_code, cat["feature"]))
    cat = {name: values[order] for name, values in cat.items()}
    return pa.table({
        "feature": pa.array(cat["feature"].astype(np.int32)),
        "kind": pa.array(cat["kind"]).dictionary_encode(),
        "rank": pa.array(cat["rank"].astype(np.int16)),
        "quantile": pa.array(cat["quantile"].astype(np.float64)),
        "value": pa.array(cat["value"].astype(np.float32)),
        "context": pa.array(cat["context"].astype(np.int32)),
        "position": pa.array(cat["position"].astype(np.int32)),
        "start": pa.array(cat["start"].astype(np.int32)),
        "token_ids": ragged(cat["token_ids"].astype(np.int32), cat["keep"], pa.int32()),
        "acts": ragged(cat["acts"].astype(np.float32), cat["keep"], pa.float32()),
    })


def with_ablation(features: pa.Table, examples: pa.Table, mean, peak, count, per_example) -> tuple:
    """The tables with the ablation columns: per feature mean / peak effect and contexts ablated
    ([d_sae] numpy), per example row its effect (nan where not ablated)."""
    features = (features.append_column("ablation_effect", pa.array(mean.astype(np.float32)))
                .append_column("ablation_effect_peak", pa.array(peak.astype(np.float32)))
                .append_column("ablation_contexts", pa.array(count.astype(np.int16))))
    return features, examples.append_column("ablation", pa.array(per_example.astype(np.float32)))


def write_results(run_dir: Path | str, summary: dict, features: pa.Table, examples: pa.Table,
                  matrix: np.ndarray, vocab: dict[int, str], before_commit=None) -> Path:
    """Write everything into a temp folder, then (if before_commit() allows) rename it into place."""

    final = results_dir(run_dir)
    tmp = final.with_name(f".tmp-{final.name}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        pq.write_table(features, tmp / FEATURE_TABLE, row_group_size=1024)
        pq.write_table(examples, tmp / "examples.parquet", row_group_size=4096)
        pq.write_table(pa.table({
            "feature": pa.array(np.asarray(summary["correlation_features"], dtype=np.int32)),
            "phi": list_array(np.arange(matrix.shape[0] + 1) * matrix.shape[0], matrix.reshape(-1), pa.float32()),
        }), tmp / "correlations.parquet")
        ids = sorted(vocab)
        pq.write_table(pa.table({"token_id": pa.array(ids, pa.int32()), "text": pa.array([vocab[i] for i in ids])}),
                       tmp / "vocab.parquet")
        (tmp / "summary.json").write_text(json.dumps({"format": FORMAT, "version": VERSION, **summary}, indent=2))
        commit_dir(tmp, final, 0, None if before_commit is None else (lambda _step: before_commit()))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# --- reading ---------------------------------------------------------------------------------


def load_summary(run_dir: Path | str) -> dict:
    path = results_dir(run_dir) / "summary.json"
    if not path.is_file():
        raise InvalidInput("training_id", f"no feature analysis for {Path(run_dir).name}",
                           f"run `mistudio features {Path(run_dir).name}` (the extract_features job) first")
    return json.loads(path.read_text())


def load_feature_table(run_dir: Path | str, columns=FEATURE_COLUMNS):
    """Per-feature statistics as a pandas DataFrame (one row per feature, in feature order)."""
    load_summary(run_dir)
    return pq.read_table(results_dir(run_dir) / FEATURE_TABLE, columns=list(columns)).to_pandas()


@functools.lru_cache(maxsize=8)
def _vocab(path: str, extraction_id: str) -> dict[int, str]:
    table = pq.read_table(path).to_pydict()
    return dict(zip(table["token_id"], table["text"]))


def _number(value):
    value = float(value)
    return value if math.isfinite(value) else None


def load_examples(run_dir: Path | str, feature: int):
    """One feature's example rows (top contexts first, then quantile samples) as a DataFrame."""
    return pq.read_table(results_dir(run_dir) / "examples.parquet", filters=[("feature", "==", int(feature))]).to_pandas()


def load_feature(run_dir: Path | str, feature: int) -> dict:
    """Everything about one feature, JSON-ready (what a feature card shows)."""
    summary = load_summary(run_dir)
    d_sae = summary["total_features"]
    if not isinstance(feature, (int, np.integer)) or not 0 <= int(feature) < d_sae:
        raise InvalidInput("feature", f"must be an index in 0..{d_sae - 1}, got {feature!r}", "pick a feature index")
    feature = int(feature)
    folder = results_dir(run_dir)
    row = pq.read_table(folder / FEATURE_TABLE, filters=[("feature", "==", feature)]).to_pylist()[0]
    vocab = _vocab(str(folder / "vocab.parquet"), summary["extraction_id"])
    start, counts = row["hist_start"], row["hist_counts"]
    card = {
        "feature": feature, "training_id": summary.get("training_id"), "extraction_id": summary["extraction_id"],
        "count": row["count"], "density": row["density"], "mean": _number(row["mean"]), "max": _number(row["max"]),
        "n_tokens": summary["n_tokens"],
        "histogram": {"edges": histogram.edges(start, len(counts)) if counts else [], "counts": counts,
                      "first_bin": start},
        "top_contexts": [], "quantile_samples": [], "logits": None, "correlated": [], "ablation": None,
    }
    if "ablation_effect" in row:
        card["ablation"] = {"effect": _number(row["ablation_effect"]), "peak": _number(row["ablation_effect_peak"]),
                            "contexts": row["ablation_contexts"], "window": summary.get("ablation_window")}
    for ex in load_examples(run_dir, feature).to_dict("records"):
        item = {"rank": int(ex["rank"]), "value": float(ex["value"]), "context": int(ex["context"]),
                "position": int(ex["position"]), "peak": int(ex["position"] - ex["start"]),
                "tokens": [vocab.get(int(i), f"<{int(i)}>") for i in ex["token_ids"]],
                "acts": [float(a) for a in ex["acts"]]}
        if ex["kind"] == "top":
            if "ablation" in ex and math.isfinite(ex["ablation"]):
                item["ablation"] = float(ex["ablation"])
            card["top_contexts"].append(item)
        else:
            card["quantile_samples"].append({"quantile": float(ex["quantile"]), **item})
    if "pos_logit_ids" in row:
        card["logits"] = {
            sign: [{"token": vocab.get(i, f"<{i}>"), "token_id": i, "value": v}
                   for i, v in zip(row[f"{prefix}_logit_ids"], row[f"{prefix}_logit_values"])]
            for sign, prefix in (("positive", "pos"), ("negative", "neg"))
        }
    if "corr_features" in row:
        card["correlated"] = [{"feature": f, "phi": p, "co_count": c}
                              for f, p, c in zip(row["corr_features"], row["corr_phi"], row["corr_counts"])]
    return card


def load_correlation_matrix(run_dir: Path | str, k: int | None = None) -> dict:
    """{"features": [...], "matrix": [[phi]]} for the k most frequent features (all stored: k=None)."""
    summary = load_summary(run_dir)
    table = pq.read_table(results_dir(run_dir) / "correlations.parquet").to_pydict()
    n = len(table["feature"])
    if k is not None and (not isinstance(k, int) or not 1 <= k <= n):
        raise InvalidInput("k", f"must be 1..{n} (the features stored for the heatmap), got {k!r}",
                           "ask for fewer features, or extract again with a larger matrix_size")
    k = n if k is None else k
    return {"training_id": summary.get("training_id"), "features": table["feature"][:k],
            "matrix": [row[:k] for row in table["phi"][:k]]}
