"""Tokenize + pack: framing per tokenizer family, masks, limits, saving and statistics."""

from __future__ import annotations

import json

import pytest
import torch
from ml_helpers import mistudio_home, train_bpe_tokenizer  # noqa: F401  (fixture)

from mistudio.data import ProcessedDataset, pack_documents, process_dataset
from mistudio.errors import InvalidInput
from mistudio.models.loading import bundled_model_path


@pytest.fixture(scope="module")
def bert_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bundled_model_path())


@pytest.fixture(scope="module")
def bpe_tokenizer():
    return train_bpe_tokenizer()


DOCS = ["the cat sat on the mat " * 5, "a second, shorter document", "third document here " * 3]


def test_bert_contexts_are_cls_text_sep_and_specials_are_masked(bert_tokenizer):
    tokens, stats = pack_documents(DOCS, bert_tokenizer, context_length=16, max_tokens=10_000)
    ids, att, act = tokens.input_ids, tokens.attention_mask, tokens.activation_mask
    assert ids.dtype == torch.int32 and ids.shape[1] == 16
    assert torch.all(ids[:, 0] == bert_tokenizer.cls_token_id)
    assert torch.all(ids[:-1, -1] == bert_tokenizer.sep_token_id)
    specials = torch.isin(ids, torch.tensor([101, 102, 0], dtype=torch.int32))
    assert torch.equal(act, att & ~specials)
    # Every text token appears exactly once, in order, with documents separated by [SEP].
    text = [t for row in ids.tolist() for t in row[1:] if t not in (101, 0)]
    expected = []
    for doc in DOCS:
        expected += bert_tokenizer(doc, add_special_tokens=False)["input_ids"] + [102]
    assert [t for t in text if t != 102] == [t for t in expected if t != 102]
    # The last context is padded, and padding is masked out of attention.
    assert not att[-1, -1] and ids[-1, -1] == bert_tokenizer.pad_token_id
    assert stats["samples"] == len(ids) and stats["documents"] == 3 and stats["padding_tokens"] > 0
    assert stats["content_tokens"] == int(act.sum()) and stats["total_tokens"] == int(att.sum())
    assert stats["min_seq_length"] <= stats["avg_seq_length"] <= stats["max_seq_length"]


def test_gpt2_style_contexts_start_with_bos_and_docs_end_with_eos(bpe_tokenizer):
    eos = bpe_tokenizer.eos_token_id
    tokens, _ = pack_documents(DOCS, bpe_tokenizer, context_length=32, max_tokens=10_000)
    ids = tokens.input_ids
    assert torch.all(ids[:, 0] == eos)  # BOS == EOS for GPT-2 style tokenizers
    stream = [
        t for row, mask in zip(ids.tolist(), tokens.attention_mask.tolist()) for t, m in zip(row[1:], mask[1:]) if m
    ]
    assert stream.count(eos) == len(DOCS) - 1  # one separator between documents
    assert not tokens.activation_mask[ids == eos].any()


def test_max_tokens_caps_the_contexts(bert_tokenizer):
    tokens, stats = pack_documents(DOCS * 20, bert_tokenizer, context_length=16, max_tokens=64)
    assert tokens.n_contexts == 4 and stats["truncated"] and stats["padding_tokens"] == 0


def test_bad_limits(bert_tokenizer, mistudio_home):
    with pytest.raises(InvalidInput) as err:
        process_dataset(None, None, context_length=1024, max_tokens=4096)
    assert err.value.field == "context_length" and "1024" in str(err.value) and "512" in str(err.value)
    with pytest.raises(InvalidInput, match="context_length: 2 leaves no room"):
        pack_documents(DOCS, bert_tokenizer, context_length=2, max_tokens=100)
    with pytest.raises(InvalidInput, match="max_tokens: 10 is less than one context of 16"):
        pack_documents(DOCS, bert_tokenizer, context_length=16, max_tokens=10)


def test_empty_corpus_is_invalid_input(tmp_path, bert_tokenizer, mistudio_home):
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(InvalidInput, match="source: the corpus contains no text"):
        process_dataset(tmp_path / "blank.txt", bert_tokenizer, context_length=16, max_tokens=64)


def test_process_dataset_saves_loads_and_is_idempotent(mistudio_home):
    progress = []
    ds = process_dataset(None, "minilm", progress=progress.append)  # ci profile: 64-token contexts, 12k tokens
    assert ds.path == mistudio_home / "data" / "datasets" / ds.dataset_id
    assert ds.tokens.context_length == 64 and ds.stats["total_tokens"] <= 12_000
    assert progress and progress[-1]["tokens_done"] == progress[-1]["tokens_total"]
    info = json.loads((ds.path / "dataset.json").read_text())
    assert info["stats"] == ds.stats and info["config"]["model"] == "all-MiniLM-L6-v2"
    again = ProcessedDataset.load(ds.dataset_id)
    for name in ("input_ids", "attention_mask", "activation_mask"):
        assert torch.equal(getattr(again.tokens, name), getattr(ds.tokens, name))
    # Same settings: the saved dataset comes back (a redelivered job does no work).
    mtime = (ds.path / "tokens.safetensors").stat().st_mtime_ns
    assert process_dataset(None, "minilm").dataset_id == ds.dataset_id
    assert (ds.path / "tokens.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(InvalidInput, match="already exists with other settings"):
        process_dataset(None, "minilm", max_tokens=640, dataset_id=ds.dataset_id)
    with pytest.raises(InvalidInput, match="dataset_id: 'a b' is not a valid id"):
        process_dataset(None, "minilm", dataset_id="a b")
    with pytest.raises(InvalidInput, match="no processed dataset 'missing'"):
        ProcessedDataset.load("missing")
