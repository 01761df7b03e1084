"""Hub downloads without a network: clear, fast errors; file selection; the progress adapter."""

from __future__ import annotations

import time

import pytest
from ml_helpers import mistudio_home  # noqa: F401  (fixture)

from mistudio.data.download import download_dataset, select_dataset_files
from mistudio.errors import InvalidInput, MistudioError
from mistudio.models.download import HubUnavailable, _byte_counter, download_model, select_model_files


def _hub_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


offline_only = pytest.mark.skipif(_hub_reachable(), reason="the Hugging Face hub is reachable here")


@offline_only
def test_download_model_without_network_says_so_quickly(mistudio_home):
    started = time.monotonic()
    with pytest.raises(HubUnavailable) as err:
        download_model("openai-community/gpt2", progress=lambda p: None)
    assert time.monotonic() - started < 20
    message = str(err.value)
    assert isinstance(err.value, MistudioError) and "no network" in message
    assert "local folder" in message and "bundled" in message


@offline_only
def test_hub_corpus_without_network_says_so(mistudio_home):
    from mistudio.data.corpora import iter_documents

    with pytest.raises(HubUnavailable, match="no network.*stdlib"):
        next(iter_documents("Salesforce/wikitext", config="wikitext-2-raw-v1"))


def test_hf_hub_offline_is_respected(mistudio_home, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailable, match="HF_HUB_OFFLINE"):
        download_model("openai-community/gpt2")
    with pytest.raises(HubUnavailable, match="stdlib"):
        download_dataset("Salesforce/wikitext", split="train", config="wikitext-2-raw-v1")


def test_bad_ids_are_invalid_input(mistudio_home):
    with pytest.raises(InvalidInput, match="model_id: '../etc' is not a hub id"):
        download_model("../etc")
    with pytest.raises(InvalidInput, match="dataset_id"):
        download_dataset("a/b/c")


def test_model_file_selection_prefers_safetensors():
    sizes = {
        "config.json": 1,
        "model.safetensors": 9,
        "pytorch_model.bin": 9,
        "tokenizer.json": 1,
        "onnx/model.onnx": 9,
        "tf_model.h5": 9,
        "README.md": 1,
        "vocab.txt": 1,
    }
    assert sorted(select_model_files(sizes)) == ["config.json", "model.safetensors", "tokenizer.json", "vocab.txt"]
    assert "pytorch_model.bin" in select_model_files({"config.json": 1, "pytorch_model.bin": 9})


def test_dataset_file_selection_by_config_and_split():
    sizes = {
        "README.md": 1,
        "wikitext-2-raw-v1/train-00000-of-00001.parquet": 5,
        "wikitext-2-raw-v1/test-00000-of-00001.parquet": 5,
        "wikitext-103-raw-v1/train-00000-of-00002.parquet": 5,
    }
    assert select_dataset_files(sizes, "train", "wikitext-2-raw-v1") == [
        "wikitext-2-raw-v1/train-00000-of-00001.parquet"
    ]
    assert select_dataset_files({"data.jsonl": 3}, "train", None) == ["data.jsonl"]


def test_byte_counter_forwards_tqdm_updates():
    seen = []
    bar_cls = _byte_counter(seen.append)
    with bar_cls(total=100, unit="B") as bar:  # used the way hf_hub_download uses its tqdm_class
        bar.update(40)
        bar.update(60)
    assert seen == [40, 60]
