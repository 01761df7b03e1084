"""Cached reads for notebooks, widgets and the CLI: feature-analysis results and the facts around
them, through mistudio.cache with the seed's keys and TTLs.

| function                              | cache key                                        | TTL   |
|---------------------------------------|--------------------------------------------------|-------|
| dictionary_stats(training_id)         | cache:features:{training_id}:stats               | 1 h   |
| correlations(training_id, k)          | cache:correlations:{training_id}:top{k}          | 2 h   |
| checkpoints(training_id)              | cache:checkpoints:{training_id}:list             | 5 min |
| model_info(model_id)                  | cache:model:{model_id}:metadata (a hash)         | 24 h  |
| dataset_stats(dataset_id)             | cache:dataset:{dataset_id}:stats                 | 24 h  |
| feature_card(training_id, feature)    | cache:api:/features/{id}/{extraction}/{feature}  | 60 s  |
| ranking(training_id, by)              | cache:api:/features/{id}/{extraction}/rank/{by}  | 60 s  |

The extract_features job drops the first three (`cache.invalidate_training`) when it writes new
results. Per-feature keys carry the extraction id read from the (invalidated) stats, so a new
extraction never serves an old card. The ML core (mistudio.features) stays Redis-free.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from mistudio import cache, run_location
from mistudio.errors import InvalidInput
from mistudio.training import model_config

RANKINGS = ("index", "density", "max")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def run_dir(training_id: str) -> Path:
    """The run folder of a training id (InvalidInput for a malformed or unknown id)."""
    return run_location.locate(training_id).path


def dictionary_stats(training_id: str) -> dict:
    """The whole-dictionary summary (summary.json): total_features, avg_activation_frequency,
    dead_neurons, frequency histogram, settings of the extraction."""
    from mistudio.features import load_summary  # why: torch/pyarrow; cached reads (a hit) need neither

    folder = run_dir(training_id)
    return cache.get_or_compute("features", lambda: load_summary(folder), training_id=training_id)


def correlations(training_id: str, k: int = 50) -> dict:
    """Phi coefficients between the k most frequent features: {"features": [...], "matrix": [[...]]}
    (phi rounded to 4 decimals: plenty for a heatmap, and 2.5x less JSON to decode on every hit)."""
    from mistudio.features import (  # why: torch/pyarrow; cached reads (a hit) need neither
        load_correlation_matrix,
        load_summary,
    )

    folder = run_dir(training_id)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidInput("k", f"must be a positive integer, got {k!r}", "pass e.g. k=50")

    def compute():
        stored = len(load_summary(folder)["correlation_features"])
        if not stored:
            raise InvalidInput("training_id", f"run {training_id!r} has no live features to correlate", "train longer")
        out = load_correlation_matrix(folder, min(k, stored))
        out["matrix"] = [[round(x, 4) for x in row] for row in out["matrix"]]
        return out

    return cache.get_or_compute("correlations", compute, training_id=training_id, k=k)


def _list_checkpoints(folder: Path) -> list[dict]:
    from mistudio.sae.checkpoint import list_checkpoints  # why: torch/pyarrow; cached reads (a hit) need neither

    return [{"step": int(p.name.split("_")[1]), "path": str(p), "created": p.stat().st_mtime}
            for p in list_checkpoints(folder)]


def checkpoints(training_id: str) -> list[dict]:
    """The run's complete checkpoints, oldest first: [{step, path, created}]."""
    folder = run_dir(training_id)
    return cache.get_or_compute("checkpoints", lambda: _list_checkpoints(folder), training_id=training_id)


def model_info(model_id: str | None) -> dict:
    """Architecture facts of a model from its config (no weights loaded), cached as a hash.
    Keyed by the name as given (None: the bundled model), so a hit touches no file."""
    from mistudio.models.loading import BUNDLED_NAME  # why: torch/pyarrow; cached reads (a hit) need neither
    from mistudio.models.metadata import model_metadata  # why: torch/pyarrow; cached reads (a hit) need neither

    return cache.get_or_compute("model", lambda: model_metadata(model_config(model_id)[1]),
                                model_id=BUNDLED_NAME if model_id is None else str(model_id))


def dataset_stats(dataset_id: str) -> dict:
    """A processed dataset's statistics (total_tokens, vocab_size, samples, avg_seq_length...)."""
    import json

    from mistudio.data.processed import datasets_dir  # why: torch/pyarrow; cached reads (a hit) need neither

    path = datasets_dir() / str(dataset_id) / "dataset.json"
    if not _ID.match(str(dataset_id)) or not path.is_file():
        raise InvalidInput("dataset_id", f"no processed dataset {dataset_id!r}", "process a dataset first")
    return cache.get_or_compute("dataset", lambda: json.loads(path.read_text())["stats"], dataset_id=dataset_id)


def feature_card(training_id: str, feature: int) -> dict:
    """One feature's card data (see mistudio.features.load_feature), cached as an API response."""
    from mistudio.features import load_feature  # why: torch/pyarrow; cached reads (a hit) need neither

    folder = run_dir(training_id)
    extraction = dictionary_stats(training_id)["extraction_id"]
    return cache.get_or_compute("api", lambda: load_feature(folder, feature),
                                path=f"/features/{training_id}/{extraction}/{int(feature)}")


def ranking(training_id: str, by: str = "density") -> list[int]:
    """Feature indices in browsing order: by index, or by density / max activation (highest first)."""
    if by not in RANKINGS:
        raise InvalidInput("by", f"unknown order {by!r}", f"use one of {', '.join(RANKINGS)}")
    folder = run_dir(training_id)
    stats = dictionary_stats(training_id)
    if by == "index":
        return list(range(stats["total_features"]))

    def compute():
        from mistudio.features import load_feature_table  # why: torch/pyarrow; cached reads (a hit) need neither

        table = load_feature_table(folder, columns=("feature", by))
        return [int(f) for f in table.sort_values([by, "feature"], ascending=[False, True], kind="stable")["feature"]]

    return cache.get_or_compute("api", compute, path=f"/features/{training_id}/{stats['extraction_id']}/rank/{by}")


def overview(training_id: str) -> dict:
    """What a report or browser header shows: the run, its model and dataset, the dictionary."""
    info = run_location.locate(training_id).read_info()
    out = {"training_id": training_id, "run": info, "stats": dictionary_stats(training_id), "time": time.time()}
    try:
        out["model"] = model_info(info["model"])
    except InvalidInput:
        out["model"] = None
    try:
        out["dataset"] = dataset_stats(info["dataset_id"])
    except (InvalidInput, KeyError):
        out["dataset"] = None
    return out
