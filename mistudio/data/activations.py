"""Activations for SAE training: an on-disk cache, and a shuffled, resumable batch stream.

The main path is "cache once, train many": MiniLM runs at ~5k tokens/s on a CPU, so
`build_activation_cache` runs the model once over a processed dataset and writes the activations of
every counted token (activation_mask) to a numpy .npy file (float32, float16 or bfloat16) next to a
small json manifest. Rows follow `np.nonzero(activation_mask)` of the dataset: context-major, then
position, so row i can be traced back to its token.

`ActivationStore` turns a cache (or a live model, without caching) into float32 batches
[batch_size, d_in]. How it shuffles, and why resume is exact:

  * The data is cut into units: chunks of cache rows, or contexts for a live model.
  * Each epoch, a seeded RNG orders the units, and consecutive units are grouped into buffers that
    fit the memory budget. A buffer is read (units in file order, so disk reads are sequential) and
    its rows are permuted by an RNG seeded with (seed, epoch, buffer).
  * Batches are the next batch_size rows of this stream; a batch may span two buffers or epochs.
So every counted token appears exactly once per epoch, and the stream is a pure function of the
seed: `state_dict()` is just (epoch, buffer, position), and `load_state_dict()` rebuilds the one
buffer it needs. When everything fits the budget there is one buffer, a full shuffle, read once.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mistudio.data.packing import PackedTokens
from mistudio.errors import InvalidInput
from mistudio.models.hooks import capture_activations, validate_hook_point
from mistudio.settings import get_settings
from mistudio.tempdirs import remove_abandoned, temp_sibling

CACHE_FORMAT = "mistudio.activation_cache"
CACHE_VERSION = 1
STATE_VERSION = 1
DEFAULT_MEMORY_BUDGET = 512 * 2**20  # bytes for the shuffle buffer; fine on an 8 GB Jetson
# numpy has no bfloat16: those caches store the raw 16 bits as uint16 and torch reinterprets them.
CACHE_DTYPES = {
    "float32": (np.float32, torch.float32),
    "float16": (np.float16, torch.float16),
    "bfloat16": (np.uint16, torch.bfloat16),
}
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
Progress = Callable[[dict], None]


def _cache_dtype(dtype: Any) -> str:
    name = str(dtype).removeprefix("torch.").lower()
    name = _DTYPE_ALIASES.get(name, name)
    if name not in CACHE_DTYPES:
        raise InvalidInput("dtype", f"{dtype!r} is not a cache dtype", f"use one of {', '.join(CACHE_DTYPES)}")
    return name


def _packed(tokens: Any) -> PackedTokens:
    """Accept a ProcessedDataset (anything with `.tokens`) or PackedTokens."""
    return getattr(tokens, "tokens", tokens)


def _unwrap_model(model: Any) -> Any:
    return model.model if hasattr(model, "metadata") and hasattr(model, "model") else model


def model_activations(
    model: Any, hook_point: str, tokens: PackedTokens, contexts: Sequence[int], batch_contexts: int
) -> Iterator[torch.Tensor]:
    """Activations [n, d_in] (model dtype, CPU) of the counted tokens of `contexts`, in row order."""
    for acts in model_activations_at(model, [hook_point], tokens, contexts, batch_contexts):
        yield acts[hook_point]


def model_activations_at(
    model: Any, hook_points: Sequence[str], tokens: PackedTokens, contexts: Sequence[int], batch_contexts: int
) -> Iterator[dict[str, torch.Tensor]]:
    """{hook point: activations [n, d_in]} of the counted tokens of `contexts`, one forward pass per
    batch for every hook point (rows aligned: the same token in the same row at each)."""
    for start in range(0, len(contexts), batch_contexts):
        idx = torch.as_tensor(np.asarray(contexts[start : start + batch_contexts], dtype=np.int64))
        captured = capture_activations(model, list(hook_points), tokens.input_ids[idx], tokens.attention_mask[idx])
        yield {hook: acts[tokens.activation_mask[idx].to(acts.device)].cpu() for hook, acts in captured.items()}


class ActivationCache:
    """A finished cache: `activations.npy` [n_tokens, d_in] opened as a read-only memmap, and its manifest."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest_file = self.path / "cache.json"
        if not manifest_file.is_file():
            raise InvalidInput(
                "path",
                f"{self.path} is not an activation cache (no cache.json)",
                "build it with build_activation_cache()",
            )
        self.manifest = json.loads(manifest_file.read_text())
        if self.manifest.get("format") != CACHE_FORMAT:
            raise InvalidInput(
                "path", f"{manifest_file} is not a miStudio activation cache", "build it with build_activation_cache()"
            )
        self.array = np.load(self.path / "activations.npy", mmap_mode="r")
        if self.array.shape != (self.n_tokens, self.d_in):
            raise InvalidInput(
                "path",
                f"{self.path} holds {self.array.shape}, its manifest says {(self.n_tokens, self.d_in)}",
                "rebuild the cache",
            )

    @property
    def d_in(self) -> int:
        return int(self.manifest["d_in"])

    @property
    def n_tokens(self) -> int:
        return int(self.manifest["n_tokens"])

    @property
    def dtype(self) -> str:
        return self.manifest["dtype"]

    @property
    def hook_point(self) -> str:
        return self.manifest["hook_point"]

    def read(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows [start, stop) in the stored dtype (a copy, not a view of the memmap)."""
        rows = np.array(self.array[start:stop])
        return torch.from_numpy(rows).view(CACHE_DTYPES[self.dtype][1])


def build_activation_cache(
    model: Any,
    hook_point: str,
    tokens: Any,
    path: str | Path,
    dtype: str | torch.dtype = "float32",
    progress: Progress | None = None,
    batch_contexts: int | None = None,
    overwrite: bool = False,
) -> ActivationCache:
    """Run `model` over packed tokens once and store the activations at `hook_point` under `path` (a folder).

    `model` is a LoadedModel or transformers model; `tokens` a ProcessedDataset or PackedTokens.
    An existing complete cache at `path` is returned as is unless `overwrite`.
    """
    return build_activation_caches(model, {hook_point: path}, tokens, dtype, progress, batch_contexts,
                                   overwrite)[hook_point]


def build_activation_caches(
    model: Any,
    paths: dict[str, str | Path],
    tokens: Any,
    dtype: str | torch.dtype = "float32",
    progress: Progress | None = None,
    batch_contexts: int | None = None,
    overwrite: bool = False,
) -> dict[str, ActivationCache]:
    """build_activation_cache for several hook points {hook point: folder} in one pass of the model
    (each hook captured once per batch); complete caches found are kept as they are."""
    caches: dict[str, ActivationCache] = {}
    missing: dict[str, Path] = {}
    for hook_point, path in paths.items():
        path = Path(path)
        if (path / "cache.json").is_file() and not overwrite:
            cache = ActivationCache(path)
            if cache.hook_point != hook_point:
                raise InvalidInput(
                    "path", f"{path} caches {cache.hook_point}, not {hook_point}", "use another path or overwrite=True"
                )
            caches[hook_point] = cache
        else:
            missing[hook_point] = path
    if not missing:
        return caches
    name = _cache_dtype(dtype)
    np_dtype, torch_dtype = CACHE_DTYPES[name]
    packed = _packed(tokens)
    net = _unwrap_model(model)
    for hook_point in missing:
        validate_hook_point(net, hook_point)
    d_in = int(net.config.hidden_size)
    n_tokens = packed.n_tokens
    if n_tokens == 0:
        raise InvalidInput(
            "tokens", "has no counted tokens (activation_mask is all False)", "process a corpus with text in it"
        )
    batch_contexts = batch_contexts or get_settings().profile.model_batch_size

    tmps, outs = {}, {}
    for hook_point, path in missing.items():
        remove_abandoned(path.parent)  # partial caches of builders that were killed
        tmps[hook_point] = tmp = temp_sibling(path)  # renamed into place when complete
        tmp.mkdir(parents=True)
        outs[hook_point] = np.lib.format.open_memmap(tmp / "activations.npy", mode="w+", dtype=np_dtype,
                                                     shape=(n_tokens, d_in))
    row, started, last = 0, time.monotonic(), 0.0
    contexts = range(packed.n_contexts)
    for i, captured in enumerate(model_activations_at(net, list(missing), packed, contexts, batch_contexts)):
        for hook_point, acts in captured.items():
            stored = acts.to(torch_dtype)
            if not torch.isfinite(stored).all():  # float16 tops out at 65504; GPT-2's residual stream can exceed it
                for tmp in tmps.values():
                    shutil.rmtree(tmp, ignore_errors=True)
                raise InvalidInput(
                    "dtype", f"activations at {hook_point} overflow {name}", "use dtype='bfloat16' or 'float32'"
                )
            out = outs[hook_point]
            out[row : row + len(stored)] = stored.view(torch.uint16).numpy() if name == "bfloat16" else stored.numpy()
        row += len(stored)
        now = time.monotonic()
        if progress and (now - last > 0.5 or row == n_tokens):
            last = now
            progress(
                {
                    "stage": "activations",
                    "contexts_done": min((i + 1) * batch_contexts, packed.n_contexts),
                    "contexts_total": packed.n_contexts,
                    "tokens_done": row,
                    "tokens_total": n_tokens,
                    "tokens_per_s": row / max(now - started, 1e-9),
                }
            )
    for hook_point, path in missing.items():
        outs[hook_point].flush()
        del outs[hook_point]
        manifest = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "hook_point": hook_point,
            "d_in": d_in,
            "n_tokens": n_tokens,
            "dtype": name,
            "n_contexts": packed.n_contexts,
            "context_length": packed.context_length,
            "model": getattr(model, "name", None) or net.config._name_or_path,
            "dataset_id": getattr(tokens, "dataset_id", None),
            "rows": "np.nonzero(activation_mask) order of the dataset",
        }
        tmp = tmps[hook_point]
        (tmp / "cache.json").write_text(json.dumps(manifest, indent=2))
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
        caches[hook_point] = ActivationCache(path)
    return {hook_point: caches[hook_point] for hook_point in paths}


# ----------------------------------------------------------------------------------------------
# Sources: where a buffer's rows come from
# ----------------------------------------------------------------------------------------------


class _CacheSource:
    """Units are chunks of consecutive cache rows."""

    def __init__(self, cache: ActivationCache, chunk_tokens: int):
        self.cache, self.chunk_tokens = cache, chunk_tokens
        starts = np.arange(0, cache.n_tokens, chunk_tokens)
        self.unit_sizes = np.minimum(starts + chunk_tokens, cache.n_tokens) - starts
        self.d_in, self.n_tokens, self.row_bytes = cache.d_in, cache.n_tokens, cache.array.dtype.itemsize * cache.d_in
        self.fingerprint = {
            "kind": "cache",
            "hook_point": cache.hook_point,
            "n_tokens": cache.n_tokens,
            "d_in": cache.d_in,
        }

    def read(self, units: np.ndarray) -> torch.Tensor:
        return _fill(self, units, (self.cache.read(u * self.chunk_tokens, (u + 1) * self.chunk_tokens) for u in units))


class _ModelSource:
    """Units are contexts; reading one runs the model (activations are recomputed, never stored)."""

    def __init__(self, model: Any, hook_point: str, tokens: PackedTokens, batch_contexts: int):
        self.model, self.hook_point, self.tokens, self.batch_contexts = model, hook_point, tokens, batch_contexts
        self.unit_sizes = tokens.activation_mask.sum(dim=1).numpy().astype(np.int64)
        self.d_in, self.n_tokens = int(model.config.hidden_size), int(self.unit_sizes.sum())
        self.row_bytes = 4 * self.d_in
        self.fingerprint = {"kind": "model", "hook_point": hook_point, "n_tokens": self.n_tokens, "d_in": self.d_in}

    def read(self, units: np.ndarray) -> torch.Tensor:
        return _fill(
            self, units, model_activations(self.model, self.hook_point, self.tokens, units, self.batch_contexts)
        )


def _fill(source: _CacheSource | _ModelSource, units: np.ndarray, parts: Iterator[torch.Tensor]) -> torch.Tensor:
    """Copy parts into one preallocated buffer: concatenating would briefly hold the buffer twice."""
    out, row = None, 0
    for part in parts:
        if out is None:
            dtype = part.dtype if isinstance(source, _CacheSource) else torch.float32  # float32: the budget's unit
            out = torch.empty(int(source.unit_sizes[units].sum()), source.d_in, dtype=dtype)
        out[row : row + len(part)] = part
        row += len(part)
    return out[:row] if out is not None else torch.empty(0, source.d_in)


# ----------------------------------------------------------------------------------------------
# The store
# ----------------------------------------------------------------------------------------------


class ActivationStore:
    """An endless (or `max_epochs`-long), deterministic, resumable stream of float32 batches [batch_size, d_in]."""

    def __init__(
        self,
        source: _CacheSource | _ModelSource,
        batch_size: int,
        seed: int = 0,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
        device: str | torch.device | None = None,
        max_epochs: int | None = None,
    ):
        for field, value in (("batch_size", batch_size), ("memory_budget_bytes", memory_budget_bytes)):
            if not isinstance(value, int) or value < 1:
                raise InvalidInput(field, f"must be a positive integer, got {value!r}", "pass a whole number above 0")
        if not isinstance(seed, int) or seed < 0:
            raise InvalidInput("seed", f"must be a non-negative integer, got {seed!r}", "pass e.g. seed=0")
        if source.n_tokens == 0:
            raise InvalidInput("tokens", "there are no activations to train on", "process a corpus with text in it")
        self.source, self.batch_size, self.seed, self.max_epochs = source, batch_size, seed, max_epochs
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.buffer_tokens = max(batch_size, memory_budget_bytes // source.row_bytes)
        self.epoch, self.buffer_index, self.position, self.tokens_seen = 0, 0, 0, 0
        self._plan_epoch: int | None = None
        self._groups: list[np.ndarray] = []
        self._loaded: tuple[int, int] | None = None  # (epoch, buffer) whose rows are in memory
        self._units: tuple[int, ...] | None = None  # which units those rows came from
        self._rows = torch.empty(0)
        self._perm = torch.empty(0, dtype=torch.long)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_cache(
        cls,
        cache: ActivationCache | str | Path,
        batch_size: int,
        seed: int = 0,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
        device: str | torch.device | None = None,
        max_epochs: int | None = None,
        chunk_tokens: int | None = None,
    ) -> ActivationStore:
        cache = cache if isinstance(cache, ActivationCache) else ActivationCache(cache)
        row_bytes = cache.array.dtype.itemsize * cache.d_in
        # Aim for >= 32 chunks per buffer so a buffer mixes text from many places of the corpus.
        chunk = chunk_tokens or int(np.clip(memory_budget_bytes // row_bytes // 32, 64, 8192))
        return cls(_CacheSource(cache, chunk), batch_size, seed, memory_budget_bytes, device, max_epochs)

    @classmethod
    def from_model(
        cls,
        model: Any,
        hook_point: str,
        tokens: Any,
        batch_size: int,
        seed: int = 0,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
        device: str | torch.device | None = None,
        max_epochs: int | None = None,
        batch_contexts: int | None = None,
    ) -> ActivationStore:
        """Run the model as batches are needed (no cache). Fine for one run; cache for several."""
        net = _unwrap_model(model)
        validate_hook_point(net, hook_point)
        source = _ModelSource(
            net, hook_point, _packed(tokens), batch_contexts or get_settings().profile.model_batch_size
        )
        return cls(source, batch_size, seed, memory_budget_bytes, device, max_epochs)

    # -- facts ----------------------------------------------------------------------------------

    @property
    def d_in(self) -> int:
        return self.source.d_in

    @property
    def n_tokens(self) -> int:
        """Activations per epoch."""
        return self.source.n_tokens

    # -- the deterministic plan -----------------------------------------------------------------

    def _groups_for(self, epoch: int) -> list[np.ndarray]:
        """Units of each buffer of `epoch`: a seeded order cut into runs that fit buffer_tokens."""
        if self._plan_epoch != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.source.unit_sizes))
            groups, current, filled = [], [], 0
            for unit in order:
                size = int(self.source.unit_sizes[unit])
                if current and filled + size > self.buffer_tokens:
                    groups.append(np.sort(np.asarray(current)))
                    current, filled = [], 0
                current.append(unit)
                filled += size
            groups.append(np.sort(np.asarray(current)))
            self._plan_epoch, self._groups = epoch, groups
        return self._groups

    def _load(self) -> None:
        key = (self.epoch, self.buffer_index)
        if self._loaded == key:
            return
        units = self._groups_for(self.epoch)[self.buffer_index]
        if self._units != tuple(units.tolist()):  # one buffer holding everything is read only once
            self._rows = torch.empty(0)  # free the old buffer first: at most one is in memory
            self._rows = self.source.read(units)
            self._units = tuple(units.tolist())
        rng = np.random.default_rng([self.seed, self.epoch, self.buffer_index])
        self._perm = torch.from_numpy(rng.permutation(len(self._rows)))
        self._loaded = key

    # -- iteration ------------------------------------------------------------------------------

    def next_batch(self) -> torch.Tensor:
        parts, need = [], self.batch_size
        while need:
            self._load()
            if self.position >= len(self._perm):
                self.position, self.buffer_index = 0, self.buffer_index + 1
                if self.buffer_index == len(self._groups_for(self.epoch)):
                    if self.max_epochs is not None and self.epoch + 1 >= self.max_epochs:
                        self.buffer_index -= 1  # stay at the end: further calls keep stopping
                        self.position = len(self._perm)
                        if parts:  # the last, short batch of a finite stream
                            break
                        raise StopIteration
                    self.epoch, self.buffer_index = self.epoch + 1, 0
                continue
            take = min(need, len(self._perm) - self.position)
            parts.append(self._rows[self._perm[self.position : self.position + take]])
            self.position += take
            need -= take
        batch = torch.cat(parts).to(device=self.device, dtype=torch.float32)
        self.tokens_seen += len(batch)
        return batch

    def __iter__(self) -> ActivationStore:
        return self

    def __next__(self) -> torch.Tensor:
        return self.next_batch()

    # -- exact resume ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Where the stream is (JSON-ready). With load_state_dict, a resumed stream yields the same batches."""
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "buffer_tokens": int(self.buffer_tokens),
            "chunk_tokens": getattr(self.source, "chunk_tokens", None),
            "source": dict(self.source.fingerprint),
            "epoch": self.epoch,
            "buffer_index": self.buffer_index,
            "position": self.position,
            "tokens_seen": self.tokens_seen,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise InvalidInput(
                "state",
                f"unknown activation store state version {state.get('version')!r}",
                "resume with the same miStudio version",
            )
        if state["source"] != self.source.fingerprint:
            raise InvalidInput(
                "state",
                f"was saved for other activations ({state['source']}), this store reads {self.source.fingerprint}",
                "resume with the same cache / model, hook point and dataset",
            )
        if state.get("chunk_tokens") != getattr(self.source, "chunk_tokens", None):
            self.source = _CacheSource(self.source.cache, state["chunk_tokens"])
        # The saved plan wins over this store's settings: the same seed and buffer size give the same stream.
        self.seed, self.buffer_tokens = int(state["seed"]), int(state["buffer_tokens"])
        self.epoch, self.buffer_index = int(state["epoch"]), int(state["buffer_index"])
        self.position, self.tokens_seen = int(state["position"]), int(state["tokens_seen"])
        self._plan_epoch, self._loaded, self._units = None, None, None
