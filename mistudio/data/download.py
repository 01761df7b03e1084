"""Hub datasets: download data files for offline use, or stream them.

`download_dataset` fetches the data files of one split with `huggingface_hub` (the library
`datasets` itself downloads with), into MISTUDIO_HOME/data/hub/<org--name>/<config>/<split>, with
the same byte/file progress callbacks as model downloads. The corpus reader then treats that folder
like any local folder of .parquet/.jsonl/.txt files. Streaming without a download uses `datasets`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

from mistudio import validation
from mistudio.data.formats import SUFFIXES
from mistudio.errors import InvalidInput
from mistudio.models.download import download_repo, is_complete, is_repo_id, repo_files, repo_slug
from mistudio.settings import get_settings
from mistudio.validation import preview

__all__ = ["download_dataset", "dataset_dir", "is_complete", "stream_hub_dataset"]

DATASET_OFFLINE_HINT = (
    "Use a local .txt/.jsonl/.parquet file or folder as the source, "
    "or the offline default corpus (source=None or 'stdlib')."
)


def dataset_dir(dataset_id: str, split: str = "train", config: str | None = None) -> Path:
    """Where `download_dataset` puts one split of a hub dataset (each part checked: never outside data/hub)."""
    if not is_repo_id(dataset_id):
        raise InvalidInput("dataset_id", f"{preview(dataset_id)} is not a hub dataset id", "use e.g. 'org/name'")
    split = validation.name(split, "split")
    config = validation.optional_name(config, "config")
    return get_settings().data_dir / "hub" / repo_slug(dataset_id) / (config or "default") / split


def select_dataset_files(sizes: dict[str, int], split: str, config: str | None) -> list[str]:
    """Data files of one config and split. Hub datasets name files by split (data/train-00000-of-00002.parquet)."""
    data = [f for f in sizes if f.endswith(SUFFIXES) and not any(p.startswith(".") for p in f.split("/"))]
    if config:
        in_config = [f for f in data if f.split("/")[0] == config]
        data = in_config or data
    by_split = [f for f in data if re.search(rf"(^|[/_.-]){re.escape(split)}([/_.-]|$)", f)]
    return by_split or data  # a single-split dataset often does not name its split


def download_dataset(
    dataset_id: str,
    split: str = "train",
    config: str | None = None,
    progress: Callable[[dict], None] | None = None,
    revision: str | None = None,
    force: bool = False,
) -> Path:
    """Download one split of a hub dataset and return its folder (usable as a corpus `source`)."""
    folder = dataset_dir(dataset_id, split, config)
    if is_complete(folder) and not force:
        return folder
    return download_repo(
        dataset_id,
        "dataset",
        folder,
        lambda sizes: select_dataset_files(sizes, split, config),
        progress,
        revision,
        offline_hint=DATASET_OFFLINE_HINT,
    )


def stream_hub_dataset(dataset_id: str, text_field: str, split: str, config: str | None) -> Iterator[str]:
    """Documents of a hub dataset streamed with `datasets` (nothing stored); needs a network."""
    try:
        import datasets
    except ImportError:
        raise InvalidInput(
            "source",
            f"reading hub dataset {dataset_id!r} needs the `datasets` package",
            "pip install 'mistudio[hub]', or download_dataset() it first",
        ) from None
    repo_files(dataset_id, "dataset", None, DATASET_OFFLINE_HINT)  # fails at once, and clearly, offline
    try:
        stream = datasets.load_dataset(dataset_id, name=config, split=split, streaming=True)
    except ValueError as exc:  # unknown config or split
        raise InvalidInput(
            "split", f"cannot open {dataset_id!r} split {split!r} config {config!r}: {exc}", "check the dataset card"
        ) from None
    columns = stream.column_names
    if columns is not None and text_field not in columns:
        raise InvalidInput(
            "text_field",
            f"{text_field!r} is not a column of {dataset_id!r} (columns: {', '.join(columns)})",
            "pass text_field= the text column",
        )
    for row in stream:
        if isinstance(row.get(text_field), str):
            yield row[text_field]
