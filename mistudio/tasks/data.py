"""Queue tasks for models and datasets: download_model, download_dataset (io), process_dataset (cpu).

Each validate function runs in the submitting process, so bad input (an unknown model,
a context longer than the model's, a missing or empty corpus, a split or dataset id that
would name a folder outside MISTUDIO_HOME) is refused before anything is queued; the worker
runs it again on the message it claimed (a message is input). The bodies are the ML core's functions with progress reported to the job
record and the seed's channels.
"""

from __future__ import annotations

import re

from mistudio import validation
from mistudio.data.corpora import check_corpus
from mistudio.data.download import download_dataset as download
from mistudio.errors import InvalidInput
from mistudio.events import DatasetProgress, DownloadProgress
from mistudio.models.download import download_model as download
from mistudio.models.download import is_repo_id
from mistudio.queue.tasks import task
from mistudio.redis import keys
from mistudio.settings import get_settings
from mistudio.tasks.reporting import Reporter
from mistudio.validation import preview

MAX_TOKENS = 1_000_000_000  # a processed corpus is held in memory while packed (~6 bytes a token)
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")  # a branch, tag or commit sha


def _text(params: dict, name: str, default=None, required: bool = False) -> str | None:
    value = params.get(name, default)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(name, f"must be a non-empty string, got {preview(value)}", f"pass {name}='...'")
    if len(value) > validation.PATH_MAX:
        raise InvalidInput(name, f"{preview(value)} is too long", f"pass a {name} of at most {validation.PATH_MAX} characters")
    return value.strip()


def _positive_int(params: dict, name: str, limit: int | None = None) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInput(name, f"must be a positive integer, got {preview(value)}", f"pass e.g. {name}=128")
    if limit is not None and value > limit:
        raise InvalidInput(name, f"{value:,} is more than the most miStudio handles ({limit:,})", f"use {name} <= {limit:,}")
    return value


def _hub_id(params: dict, name: str) -> str:
    value = _text(params, name, required=True)
    if not is_repo_id(value):
        raise InvalidInput(name, f"{preview(value)} is not a Hugging Face hub id", "use e.g. 'openai-community/gpt2'")
    return value


def _revision(params: dict) -> str | None:
    value = _text(params, "revision")
    if value is not None and not _REVISION.fullmatch(value):
        raise InvalidInput("revision", f"{preview(value)} is not a branch, tag or commit", "use e.g. 'main'")
    return value


# --- download_model ---------------------------------------------------------------------


def validate_download_model(params: dict) -> dict:
    validation.only(params, ("model_id", "revision"), "download_model")
    return {"model_id": _hub_id(params, "model_id"), "revision": _revision(params)}


@task("download_model", queue="io", priority=5, rate_tier="downloads", slot="downloads",
      channel=keys.model_download_channel, channel_param="model_id", events=("download.progress",),
      validate=validate_download_model, id_prefix="dl", description="download a model from the Hugging Face hub")
def download_model(job, model_id: str, revision: str | None = None) -> dict:
    with Reporter(job, keys.model_download_channel(model_id), DownloadProgress) as report:
        path = download(model_id, progress=report, revision=revision)
        report(DownloadProgress(model_id=model_id, done=True, path=str(path)))
    return {"model_id": model_id, "path": str(path)}


# --- download_dataset -------------------------------------------------------------------


def validate_download_dataset(params: dict) -> dict:
    # split and config name folders under data/hub/: each must be a plain name (no '..', no '/').
    validation.only(params, ("dataset_id", "split", "config", "revision"), "download_dataset")
    return {"dataset_id": _hub_id(params, "dataset_id"), "split": validation.name(params.get("split", "train"), "split"),
            "config": validation.optional_name(params.get("config"), "config"), "revision": _revision(params)}


@task("download_dataset", queue="io", priority=5, rate_tier="downloads", slot="downloads",
      channel=keys.dataset_download_channel, channel_param="dataset_id", events=("download.progress",),
      validate=validate_download_dataset, id_prefix="dl", description="download a dataset from the Hugging Face hub")
def download_dataset(job, dataset_id: str, split: str = "train", config: str | None = None,
                     revision: str | None = None) -> dict:

    with Reporter(job, keys.dataset_download_channel(dataset_id), DownloadProgress) as report:
        path = download(dataset_id, split=split, config=config, progress=report, revision=revision)
        report(DownloadProgress(dataset_id=dataset_id, done=True, path=str(path)))
    return {"dataset_id": dataset_id, "path": str(path)}


# --- process_dataset --------------------------------------------------------------------


_PROCESS_PARAMS = ("source", "model", "context_length", "max_tokens", "dataset_id", "text_field", "split")


def validate_process_dataset(params: dict) -> dict:
    # why: packing and processed import torch and transformers, kept off the submit path of other tasks
    from mistudio.data.packing import check_context_length, framing_for
    from mistudio.data.processed import _tokenizer_and_limit

    validation.only(params, _PROCESS_PARAMS, "process_dataset")
    profile = get_settings().profile
    clean = {
        "source": _text(params, "source"),
        "model": _text(params, "model"),
        "context_length": _positive_int(params, "context_length") or profile.context_length,
        "max_tokens": _positive_int(params, "max_tokens", MAX_TOKENS) or profile.corpus_max_tokens,
        # dataset_id names the folder data/datasets/{dataset_id}; split a folder of a hub download.
        "dataset_id": validation.optional_name(params.get("dataset_id"), "dataset_id"),
        "text_field": _text(params, "text_field", "text"),
        "split": validation.name(params.get("split", "train"), "split"),
    }
    tokenizer, _, model_max = _tokenizer_and_limit(clean["model"])  # unknown model -> InvalidInput
    check_context_length(clean["context_length"], model_max, framing_for(tokenizer))
    check_corpus(clean["source"], clean["text_field"])
    return clean


@task("process_dataset", queue="cpu", priority=3, rate_tier="dataset_processing", slot="processing",
      channel=keys.dataset_process_channel, channel_param="dataset_id", events=("dataset.progress",),
      validate=validate_process_dataset, id_prefix="ds", description="tokenize and pack a corpus for a model")
def process_dataset(job, source, model, context_length, max_tokens, dataset_id, text_field, split) -> dict:
    # why: torch; submit-time validation stays torch-free
    from mistudio.data.processed import process_dataset as process

    channel = keys.dataset_process_channel(dataset_id or job.job_id)
    with Reporter(job, channel, DatasetProgress) as report:
        dataset = process(source, model, context_length, max_tokens, report, dataset_id=dataset_id,
                          text_field=text_field, split=split)
        report(DatasetProgress(dataset_id=dataset.dataset_id, done=True, stats=dataset.stats))
    return {"dataset_id": dataset.dataset_id, "path": str(dataset.path), "stats": dataset.stats}
