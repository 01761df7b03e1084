"""Queue tasks for models and datasets: download_model, download_dataset (io), process_dataset (cpu).

Each validate function runs in the submitting process, so bad input (an unknown model,
a context longer than the model's, a missing or empty corpus) is refused before anything
is queued. The bodies are the ML core's functions with progress reported to the job
record and the seed's channels.
"""

from __future__ import annotations

from mistudio.data.corpora import check_corpus
from mistudio.errors import InvalidInput
from mistudio.queue.tasks import task
from mistudio.redis import keys
from mistudio.tasks.reporting import Reporter


def _text(params: dict, name: str, default=None, required: bool = False) -> str | None:
    value = params.get(name, default)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(name, f"must be a non-empty string, got {value!r}", f"pass {name}='...'")
    return value.strip()


def _positive_int(params: dict, name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInput(name, f"must be a positive integer, got {value!r}", f"pass e.g. {name}=128")
    return value


def _hub_id(params: dict, name: str) -> str:
    from mistudio.models.download import is_repo_id

    value = _text(params, name, required=True)
    if not is_repo_id(value):
        raise InvalidInput(name, f"{value!r} is not a Hugging Face hub id", "use e.g. 'openai-community/gpt2'")
    return value


# --- download_model ---------------------------------------------------------------------


def validate_download_model(params: dict) -> dict:
    return {"model_id": _hub_id(params, "model_id"), "revision": _text(params, "revision")}


@task("download_model", validate=validate_download_model, id_prefix="dl")
def download_model(job, model_id: str, revision: str | None = None) -> dict:
    from mistudio.models.download import download_model as download

    with Reporter(job, keys.model_download_channel(model_id), "download.progress") as report:
        path = download(model_id, progress=report, revision=revision)
        report({"model_id": model_id, "done": True, "path": str(path)})
    return {"model_id": model_id, "path": str(path)}


# --- download_dataset -------------------------------------------------------------------


def validate_download_dataset(params: dict) -> dict:
    return {"dataset_id": _hub_id(params, "dataset_id"), "split": _text(params, "split", "train"),
            "config": _text(params, "config"), "revision": _text(params, "revision")}


@task("download_dataset", validate=validate_download_dataset, id_prefix="dl")
def download_dataset(job, dataset_id: str, split: str = "train", config: str | None = None,
                     revision: str | None = None) -> dict:
    from mistudio.data.download import download_dataset as download

    with Reporter(job, keys.dataset_download_channel(dataset_id), "download.progress") as report:
        path = download(dataset_id, split=split, config=config, progress=report, revision=revision)
        report({"dataset_id": dataset_id, "done": True, "path": str(path)})
    return {"dataset_id": dataset_id, "path": str(path)}


# --- process_dataset --------------------------------------------------------------------


def validate_process_dataset(params: dict) -> dict:
    from mistudio.data.packing import check_context_length, framing_for
    from mistudio.data.processed import _tokenizer_and_limit
    from mistudio.settings import get_settings

    profile = get_settings().profile
    clean = {
        "source": _text(params, "source"),
        "model": _text(params, "model"),
        "context_length": _positive_int(params, "context_length") or profile.context_length,
        "max_tokens": _positive_int(params, "max_tokens") or profile.corpus_max_tokens,
        "dataset_id": _text(params, "dataset_id"),
        "text_field": _text(params, "text_field", "text"),
        "split": _text(params, "split", "train"),
    }
    tokenizer, _, model_max = _tokenizer_and_limit(clean["model"])  # unknown model -> InvalidInput
    check_context_length(clean["context_length"], model_max, framing_for(tokenizer))
    check_corpus(clean["source"], clean["text_field"])
    return clean


@task("process_dataset", validate=validate_process_dataset, id_prefix="ds")
def process_dataset(job, source, model, context_length, max_tokens, dataset_id, text_field, split) -> dict:
    from mistudio.data.processed import process_dataset as process

    channel = keys.dataset_process_channel(dataset_id or job.job_id)
    with Reporter(job, channel, "dataset.progress") as report:
        dataset = process(source, model, context_length, max_tokens, report, dataset_id=dataset_id,
                          text_field=text_field, split=split)
        report({"dataset_id": dataset.dataset_id, "done": True, **dataset.stats})
    return {"dataset_id": dataset.dataset_id, "path": str(dataset.path), "stats": dataset.stats}
