"""Processed datasets: a corpus tokenized for one model, packed, and saved under MISTUDIO_HOME/data.

Layout of MISTUDIO_HOME/data/datasets/<dataset_id>/:
  tokens.safetensors   input_ids (int32), attention_mask (bool), activation_mask (bool), [n, context_length]
  dataset.json         the settings it was made with and its statistics (cached in Redis for 24 h)

`process_dataset` is the body of the queue's `process_dataset` job. It is idempotent: asked again
with the same settings it returns the saved dataset, so a redelivered job costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from mistudio.data.corpora import iter_documents, source_name
from mistudio.data.packing import PackedTokens, check_context_length, framing_for, pack_documents
from mistudio import validation
from mistudio.errors import InvalidInput
from mistudio.models.folders import resolve_model_path
from mistudio.settings import get_settings
from mistudio.validation import exists, local_path, preview

FORMAT = "mistudio.dataset"
VERSION = 1


@dataclass
class ProcessedDataset:
    dataset_id: str
    path: Path
    tokens: PackedTokens
    stats: dict  # JSON-ready: total_tokens, vocab_size, samples, avg/min/max_seq_length, ...
    config: dict  # the settings it was made with

    @property
    def n_tokens(self) -> int:
        return self.tokens.n_tokens

    @classmethod
    def load(cls, dataset_id_or_path: str | Path) -> ProcessedDataset:
        path = local_path(dataset_id_or_path, "dataset_id")
        if not (path / "dataset.json").is_file():
            path = datasets_dir() / validation.name(str(dataset_id_or_path), "dataset_id")
        if not (path / "dataset.json").is_file():
            raise InvalidInput(
                "dataset_id",
                f"no processed dataset {preview(str(dataset_id_or_path))} under {datasets_dir()}",
                "run process_dataset() first, or pass the dataset's folder",
            )
        info = json.loads((path / "dataset.json").read_text())
        arrays = load_file(str(path / "tokens.safetensors"))
        tokens = PackedTokens(arrays["input_ids"], arrays["attention_mask"], arrays["activation_mask"])
        return cls(info["dataset_id"], path, tokens, info["stats"], info["config"])


def for_run(path: str | None, dataset_id: str, config: dict | None, tokenizer_or_model: Any,
            progress: Callable[[dict], None] | None = None) -> ProcessedDataset:
    """A run's dataset on this device: at path (where the training device had it), else this
    device's copy by its id, else processed again with the settings it was made with. Runs can be
    shared between devices (MISTUDIO_RUN_STORE); datasets stay per device and are rebuilt."""
    if path and (Path(path) / "dataset.json").is_file():
        return ProcessedDataset.load(path)
    if (datasets_dir() / validation.name(dataset_id, "dataset_id") / "dataset.json").is_file():
        return ProcessedDataset.load(dataset_id)
    if not config:
        raise InvalidInput("dataset_id", f"dataset {dataset_id!r} of this run is not on this device and the run does "
                           "not record how it was made", "process it here first (process_dataset job), or train again")
    dataset = process_dataset(config["source"], tokenizer_or_model, config["context_length"], config["max_tokens"],
                              progress, text_field=config["text_field"], split=config["split"],
                              config=config["config"])
    if dataset.dataset_id != dataset_id:
        raise InvalidInput("dataset_id", f"processing the run's corpus here gave {dataset.dataset_id!r}, not the run's "
                           f"{dataset_id!r}", "give this device the same corpus and model as the training device")
    return dataset


def datasets_dir() -> Path:
    return get_settings().data_dir / "datasets"


def _tokenizer_and_limit(tokenizer_or_model: Any) -> tuple[Any, str, int | None]:
    """(tokenizer, model name, the model's maximum context) from a name, a LoadedModel or a tokenizer."""
    if tokenizer_or_model is None or isinstance(tokenizer_or_model, (str, Path)):
        from transformers import AutoConfig, AutoTokenizer  # why: transformers takes seconds to import

        name, path = resolve_model_path(None if tokenizer_or_model is None else str(tokenizer_or_model))
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        limit = getattr(AutoConfig.from_pretrained(path, local_files_only=True), "max_position_embeddings", None)
        return tokenizer, name, limit
    if hasattr(tokenizer_or_model, "tokenizer") and hasattr(tokenizer_or_model, "metadata"):  # a LoadedModel
        return tokenizer_or_model.tokenizer, tokenizer_or_model.name, tokenizer_or_model.metadata.get("max_context")
    tokenizer = tokenizer_or_model
    limit = getattr(tokenizer, "model_max_length", None)
    return (
        tokenizer,
        getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
        (limit if limit and limit < 10**9 else None),
    )


def _slug(text: str) -> str:
    text = text.rstrip("/").rsplit("/", 1)[-1]  # a path's or hub id's last part
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")[:40] or "data"


def process_dataset(
    source: str | Path | None = None,
    tokenizer_or_model_name: Any = None,
    context_length: int | None = None,
    max_tokens: int | None = None,
    progress: Callable[[dict], None] | None = None,
    *,
    dataset_id: str | None = None,
    text_field: str = "text",
    split: str = "train",
    config: str | None = None,
    overwrite: bool = False,
) -> ProcessedDataset:
    """Tokenize and pack a corpus for a model and save it. Sizes default to the settings profile."""
    profile = get_settings().profile
    context_length = profile.context_length if context_length is None else context_length
    max_tokens = profile.corpus_max_tokens if max_tokens is None else max_tokens
    tokenizer, model_name, model_max = _tokenizer_and_limit(tokenizer_or_model_name)
    check_context_length(context_length, model_max, framing_for(tokenizer))

    src = source_name(source)
    if src != "stdlib" and exists(local_path(src, "source"), "source"):
        src = str(local_path(src, "source").absolute())
    settings = {
        "source": src,
        "model": model_name,
        "context_length": context_length,
        "max_tokens": max_tokens,
        "text_field": text_field,
        "split": split,
        "config": config,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    dataset_id = validation.name(dataset_id or f"{_slug(src)}-{_slug(model_name)}-ctx{context_length}-{digest}",
                                 "dataset_id")  # it names a folder under data/datasets

    path = datasets_dir() / dataset_id
    if (path / "dataset.json").is_file() and not overwrite:
        existing = ProcessedDataset.load(path)
        if existing.config == settings:
            return existing  # same settings: a redelivered job, or a second run of a notebook cell
        raise InvalidInput(
            "dataset_id",
            f"{dataset_id!r} already exists with other settings",
            "pick another dataset_id or pass overwrite=True",
        )

    documents = iter_documents(source, text_field=text_field, split=split, config=config)
    tokens, stats = pack_documents(documents, tokenizer, context_length, max_tokens, progress)

    # Write into a temporary folder and rename: a crash never leaves a half-written dataset behind.
    tmp = path.with_name(f".{dataset_id}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {
            "input_ids": tokens.input_ids,
            "attention_mask": tokens.attention_mask,
            "activation_mask": tokens.activation_mask,
        },
        str(tmp / "tokens.safetensors"),
    )
    info = {"format": FORMAT, "version": VERSION, "dataset_id": dataset_id, "config": settings, "stats": stats}
    (tmp / "dataset.json").write_text(json.dumps(info, indent=2))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return ProcessedDataset(dataset_id, path, tokens, stats, settings)
