"""Activation cache and store: bit-exact round trip, exact-once coverage per epoch, exact resume."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from ml_helpers import minilm, tiny_gpt2, tiny_gpt2_dir  # noqa: F401  (fixtures)

from mistudio.data import (ActivationCache, ActivationStore, build_activation_cache, build_activation_caches,
                           process_dataset)
from mistudio.data.packing import PackedTokens
from mistudio.errors import InvalidInput
from mistudio.models import capture_activations

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    path = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MISTUDIO_HOME", str(path))
        mp.setenv("MISTUDIO_PROFILE", "ci")
        yield path


@pytest.fixture(scope="module")
def dataset(home, tiny_gpt2):
    return process_dataset(None, tiny_gpt2, context_length=32, max_tokens=32 * 40)


@pytest.fixture(scope="module")
def cache(home, tiny_gpt2, dataset):
    return build_activation_cache(tiny_gpt2, HOOK, dataset, home / "caches" / "f32")


def _keys(rows: torch.Tensor) -> Counter:
    return Counter(row.tobytes() for row in rows.numpy())


def _stream(store: ActivationStore, n_batches: int) -> list[torch.Tensor]:
    return [next(store) for _ in range(n_batches)]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_cache_round_trips_bit_exactly(home, tiny_gpt2, dataset, dtype):
    progress = []
    cache = build_activation_cache(
        tiny_gpt2,
        HOOK,
        dataset,
        home / "caches" / f"rt-{dtype}",
        dtype=dtype,
        progress=progress.append,
        batch_contexts=7,
    )
    tokens, parts = dataset.tokens, []
    for start in range(0, tokens.n_contexts, 7):  # the cache's batching: BLAS results may depend on it
        window = slice(start, start + 7)
        acts = capture_activations(tiny_gpt2, [HOOK], tokens.input_ids[window], tokens.attention_mask[window])[HOOK]
        parts.append(acts[tokens.activation_mask[window]])
    expected = torch.cat(parts).to(getattr(torch, dtype))
    assert cache.n_tokens == tokens.n_tokens == len(expected) and cache.d_in == 64
    assert torch.equal(cache.read(), expected)  # bit-exact, in np.nonzero(activation_mask) order
    reopened = ActivationCache(cache.path)
    assert torch.equal(reopened.read(5, 9), expected[5:9])
    assert json.loads((cache.path / "cache.json").read_text())["dtype"] == dtype
    assert progress[-1]["tokens_done"] == progress[-1]["tokens_total"] == cache.n_tokens
    assert not list(cache.path.parent.glob(".*tmp*"))  # the temporary folder was renamed into place


def test_store_covers_every_token_once_per_epoch_in_shuffled_order(cache):
    # A budget of ~300 rows forces several buffers; batches of 128 straddle buffers and epochs.
    store = ActivationStore.from_cache(cache, batch_size=128, seed=3, memory_budget_bytes=300 * 64 * 4, chunk_tokens=64)
    assert store.d_in == 64 and store.n_tokens == cache.n_tokens and store.buffer_tokens == 300
    everything = cache.read().float()
    rows, epochs = [], 3
    while len(rows) * 128 < epochs * store.n_tokens + 128:
        rows.append(next(store))
        assert len(store._rows) <= store.buffer_tokens  # the memory budget holds
    assert all(b.shape == (128, 64) and b.dtype == torch.float32 for b in rows)
    stream = torch.cat(rows)
    per_epoch = [stream[e * store.n_tokens : (e + 1) * store.n_tokens] for e in range(epochs)]
    for epoch_rows in per_epoch:
        assert _keys(epoch_rows) == _keys(everything)
    assert not torch.equal(per_epoch[0], everything)  # shuffled ...
    assert not torch.equal(per_epoch[0], per_epoch[1])  # ... differently every epoch


def test_whole_cache_in_budget_is_one_full_shuffle(cache):
    store = ActivationStore.from_cache(cache, batch_size=cache.n_tokens, seed=0)
    first, second = next(store), next(store)
    assert _keys(first) == _keys(cache.read().float()) == _keys(second)
    assert store.epoch == 1 and not torch.equal(first, second)


def test_resume_from_state_dict_gives_identical_batches(cache):
    kwargs = dict(batch_size=96, seed=11, memory_budget_bytes=250 * 64 * 4, chunk_tokens=50)
    reference = _stream(ActivationStore.from_cache(cache, **kwargs), 40)
    first = ActivationStore.from_cache(cache, **kwargs)
    _stream(first, 17)
    state = json.loads(json.dumps(first.state_dict()))  # checkpoints store it as JSON
    resumed = ActivationStore.from_cache(cache.path, batch_size=96, seed=0)  # other seed/budget: the state wins
    resumed.load_state_dict(state)
    for expected, got in zip(reference[17:], _stream(resumed, 23)):
        assert torch.equal(expected, got)
    assert resumed.tokens_seen == 40 * 96
    other = ActivationStore.from_cache(cache, batch_size=96, seed=12, memory_budget_bytes=250 * 64 * 4, chunk_tokens=50)
    assert not torch.equal(_stream(other, 1)[0], reference[0])


def test_live_model_store_covers_and_resumes(tiny_gpt2, dataset, cache):
    kwargs = dict(batch_size=100, seed=5, memory_budget_bytes=200 * 64 * 4, batch_contexts=4)
    store = ActivationStore.from_model(tiny_gpt2, HOOK, dataset, **kwargs)
    n_batches = -(-store.n_tokens // 100)
    stream = torch.cat(_stream(store, n_batches))[: store.n_tokens]
    assert _keys(stream) == _keys(cache.read())  # same activations as the cache, shuffled
    reference = _stream(ActivationStore.from_model(tiny_gpt2, HOOK, dataset, **kwargs), 6)
    first = ActivationStore.from_model(tiny_gpt2, HOOK, dataset, **kwargs)
    _stream(first, 3)
    resumed = ActivationStore.from_model(tiny_gpt2, HOOK, dataset, **kwargs)
    resumed.load_state_dict(first.state_dict())
    for expected, got in zip(reference[3:], _stream(resumed, 3)):
        assert torch.equal(expected, got)


def test_max_epochs_ends_the_stream_with_a_short_batch(cache):
    store = ActivationStore.from_cache(cache, batch_size=500, seed=0, max_epochs=1)
    batches = list(store)
    assert sum(len(b) for b in batches) == cache.n_tokens and len(batches[-1]) == cache.n_tokens % 500
    with pytest.raises(StopIteration):
        next(store)


def test_minilm_cache_skips_special_tokens(minilm, home):
    ds = process_dataset(None, minilm, context_length=32, max_tokens=32 * 6, dataset_id="minilm-small")
    cache = build_activation_cache(minilm, "blocks.3.hook_resid_post", ds, home / "caches" / "minilm", dtype="bf16")
    assert cache.n_tokens == ds.stats["content_tokens"] < ds.stats["total_tokens"]
    assert cache.d_in == 384 and cache.dtype == "bfloat16" and cache.array.dtype == np.uint16
    store = ActivationStore.from_cache(cache, batch_size=64)
    assert next(store).shape == (64, 384)


def test_bad_inputs(cache, tiny_gpt2, dataset, home):
    with pytest.raises(InvalidInput, match="dtype: 'int8' is not a cache dtype"):
        build_activation_cache(tiny_gpt2, HOOK, dataset, home / "bad", dtype="int8")
    with pytest.raises(InvalidInput, match="hook_point: 'blocks.7.hook_resid_post'"):
        build_activation_cache(tiny_gpt2, "blocks.7.hook_resid_post", dataset, home / "bad")
    with pytest.raises(InvalidInput, match="caches blocks.1.hook_resid_post, not blocks.0.hook_mlp_out"):
        build_activation_cache(tiny_gpt2, "blocks.0.hook_mlp_out", dataset, cache.path)
    with pytest.raises(InvalidInput, match="is not an activation cache"):
        ActivationStore.from_cache(home / "nowhere", batch_size=8)
    with pytest.raises(InvalidInput, match="batch_size: must be a positive integer"):
        ActivationStore.from_cache(cache, batch_size=0)
    empty = PackedTokens(
        dataset.tokens.input_ids[:1],
        dataset.tokens.attention_mask[:1],
        torch.zeros_like(dataset.tokens.activation_mask[:1]),
    )
    with pytest.raises(InvalidInput, match="no counted tokens"):
        build_activation_cache(tiny_gpt2, HOOK, empty, home / "bad")
    store = ActivationStore.from_cache(cache, batch_size=8)
    live = ActivationStore.from_model(tiny_gpt2, "blocks.0.hook_mlp_out", dataset, batch_size=8)
    with pytest.raises(InvalidInput, match="state: was saved for other activations"):
        store.load_state_dict(live.state_dict())


def test_several_hook_points_are_cached_in_one_pass_row_aligned(home, tiny_gpt2, dataset, cache):
    calls = []
    net = tiny_gpt2.model
    handle = net.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        caches = build_activation_caches(
            tiny_gpt2, {HOOK: home / "caches" / "multi-1", "blocks.0.hook_resid_post": home / "caches" / "multi-0"},
            dataset, batch_contexts=10)
    finally:
        handle.remove()
    assert len(calls) == 4  # 40 contexts, 10 a batch: one forward pass per batch for both hook points
    assert torch.equal(caches[HOOK].read(), cache.read())  # the same rows as the one-hook cache
    one = capture_activations(tiny_gpt2, ["blocks.0.hook_resid_post"], dataset.tokens.input_ids[:1],
                              dataset.tokens.attention_mask[:1])["blocks.0.hook_resid_post"][0]
    first = one[dataset.tokens.activation_mask[0]]
    assert torch.equal(caches["blocks.0.hook_resid_post"].read(0, len(first)), first)
    again = build_activation_caches(tiny_gpt2, {HOOK: home / "caches" / "multi-1"}, dataset)
    assert again[HOOK].path == caches[HOOK].path  # complete caches are kept
