"""Feature analysis of a trained run over its held-out contexts (no Redis: callbacks only).

    summary = extract_features(run_dir, progress=print)

Contexts go through the model in batches of whole contexts (forward to the hook point, SAE
encode); each batch's dense latents [contexts, T, d_sae] are folded into bounded accumulators
(statistics, top contexts, quantile reservoir, co-activation pairs) and dropped; the SAE's
reconstructions of them are scored too (held-out explained variance and FVU). The batch size
comes from MISTUDIO_MEMORY_BUDGET, so [n_tokens, d_sae] is never held.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mistudio.data import processed
from mistudio.errors import InvalidInput
from mistudio.features import histogram, store
from mistudio.features.ablation import ablation_effects, per_feature
from mistudio.features.correlations import PairCounter, correlation_matrix, top_correlated
from mistudio.features.examples import DEFAULT_QUANTILES, Reservoir, TopContexts, distinct_examples
from mistudio.features.logits import top_logits, unembedding
from mistudio.features.stats import FeatureStats
from mistudio.features.summary import dictionary_summary
from mistudio.features.tokens import token_texts
from mistudio.models.hooks import capture_activations
from mistudio.models.loading import load_model
from mistudio.runs import RunFolder
from mistudio.sae.export import load_sae
from mistudio.sae.metrics import HeldOutReconstruction
from mistudio.settings import get_settings

DENSE_COPIES = 8  # float32-sized dense [tokens, d_sae] buffers alive at once (pre-acts, latents, int64 hashes...)


def batch_contexts(context_length: int, d_sae: int, memory_budget: int, model_batch: int) -> int:
    """Contexts per batch so that the batch's dense latents stay within half the budget."""
    per_context = context_length * d_sae * 4 * DENSE_COPIES
    return max(1, min(model_batch, (memory_budget // 2) // per_context))


def _holdout(info: dict, tokens, n_tokens: int | None) -> tuple[int, int]:
    start, stop = info["holdout_contexts"]
    if stop <= start:
        raise InvalidInput("training_id", f"run {info.get('training_id')} has no held-out contexts",
                           "train on a corpus of more than one context")
    if n_tokens is not None:
        if not isinstance(n_tokens, int) or n_tokens < 1:
            raise InvalidInput("n_tokens", f"must be a positive integer, got {n_tokens!r}", "pass e.g. n_tokens=4096")
        counted = torch.cumsum(tokens.activation_mask[start:stop].sum(dim=1), 0)
        stop = start + min(stop - start, int(torch.searchsorted(counted, n_tokens)) + 1)
    return start, stop


def extract_features(
    run_dir: Path | str,
    *,
    n_tokens: int | None = None,
    top_k: int = 20,
    context_window: int = 10,
    reservoir_size: int = 32,
    quantiles=DEFAULT_QUANTILES,
    n_logits: int = 10,
    n_correlated: int = 10,
    matrix_size: int = 100,
    ablation_contexts: int = 5,
    device: str | None = None,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    before_commit: Callable[[], bool] | None = None,
) -> dict:
    """Analyse every feature of the run's SAE on (the first n_tokens of) its held-out tokens and
    write runs/{id}/features/. With an LM head, each feature is also ablated on its first
    `ablation_contexts` top contexts (0: not). Returns the summary (or {"stopped": True} if asked to stop)."""

    started = time.time()
    run_dir = Path(run_dir)
    report = progress or (lambda data: None)
    for name, value in (("top_k", top_k), ("context_window", context_window), ("reservoir_size", reservoir_size),
                        ("ablation_contexts", ablation_contexts)):
        least = 0 if name in ("context_window", "ablation_contexts") else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise InvalidInput(name, f"must be a {'non-negative' if least == 0 else 'positive'} "
                                     f"integer, got {value!r}", f"pass e.g. {name}=10")
    folder = RunFolder(run_dir)
    info = folder.read_info()
    if not folder.exported():
        raise InvalidInput("training_id", f"run {run_dir.name} has no exported SAE yet", "let the training finish first")
    loaded = load_model(info["model"], device=device)
    sae = load_sae(folder.export, device=loaded.device)
    # The training device's path, else this device's copy, else made again (runs are shared, datasets not).
    dataset = processed.for_run(info.get("dataset_path"), info["dataset_id"], info.get("dataset_config"), loaded)
    tokens = dataset.tokens
    start, stop = _holdout(info, tokens, n_tokens)
    hook, length, d_sae = info["hook_point"], tokens.context_length, sae.d_sae
    settings = get_settings()
    per_batch = batch_contexts(length, d_sae, settings.memory_budget, settings.profile.model_batch_size)
    dev = loaded.device

    stats = _Accumulators(d_sae, top_k, reservoir_size, context_window, dev, settings.memory_budget)
    reconstruction = HeldOutReconstruction()  # how well the SAE reconstructs text it never trained on
    n_ctx, done, seen = stop - start, 0, 0
    report({"phase": "extracting", "done": 0, "total": n_ctx, "tokens": 0})
    for first in range(start, stop, per_batch):
        if should_stop is not None and should_stop():
            return {"stopped": True, "done": done, "total": n_ctx}
        last = min(stop, first + per_batch)
        amask = tokens.activation_mask[first:last].to(dev)
        acts = capture_activations(loaded, [hook], tokens.input_ids[first:last], tokens.attention_mask[first:last])[hook]
        if acts.shape[-1] != sae.d_in:
            raise InvalidInput("training_id", f"the SAE takes width {sae.d_in} but {hook} has width {acts.shape[-1]}",
                               "extract with the model and hook point the SAE was trained on")
        with torch.no_grad():
            z = sae.encode(acts).float() * amask[..., None]
            counted = amask.bool()
            reconstruction.add(acts[counted], sae.decode(z[counted].to(sae.W_dec.dtype)))
        stats.add(z, first - start, int(amask.sum()))
        del acts, z
        done, seen = last - start, stats.stats.n_tokens
        report({"phase": "extracting", "done": done, "total": n_ctx, "tokens": seen})

    report({"phase": "logits and correlations", "done": n_ctx, "total": n_ctx, "tokens": seen})
    W_U = unembedding(loaded)
    logits = None
    if W_U is not None and W_U.shape[1] == sae.d_in:
        logits = tuple(t.numpy() for t in top_logits(sae.W_dec.detach(), W_U, n_logits))
    summary, features, examples, matrix, used_ids = stats.finish(tokens, start, quantiles, n_correlated, matrix_size,
                                                                 logits)
    if should_stop is not None and should_stop():
        return {"stopped": True, "done": done, "total": n_ctx}
    ablated = False
    if logits is not None and ablation_contexts > 0:
        def ablation_progress(pairs_done: int, pairs: int) -> None:  # (feature, context) pairs
            report({"phase": "ablation", "done": pairs_done, "total": pairs, "tokens": seen})

        effects = _ablation(loaded, hook, sae, tokens, features, examples, ablation_contexts, context_window,
                            settings.memory_budget, ablation_progress, should_stop)
        if effects is None:
            return {"stopped": True, "done": done, "total": n_ctx}
        features, examples = effects
        ablated = True
    held_out = reconstruction.summary()
    summary.update({
        "explained_variance": held_out.get("explained_variance"), "fvu": held_out.get("fvu"),
        "training_id": info.get("training_id", run_dir.name), "extraction_id": uuid.uuid4().hex[:12],
        "created": time.time(), "duration_s": time.time() - started, "model": info["model"], "hook_point": hook,
        "dataset_id": info.get("dataset_id"), "holdout_contexts": [start, stop], "n_contexts": n_ctx,
        "context_length": length, "d_in": sae.d_in, "architecture": sae.architecture,
        "top_k": top_k, "context_window": context_window, "reservoir_size": reservoir_size,
        "quantiles": list(quantiles), "n_logits": n_logits if logits is not None else 0,
        "has_logits": logits is not None, "n_correlated": n_correlated,
        "ablation_contexts": ablation_contexts if ablated else 0, "ablation_window": context_window,
        "has_ablation": ablated, "histogram_bins": histogram.spec(),
        "batch_contexts": per_batch, "state_bytes": stats.state_bytes(),
    })
    report({"phase": "writing", "done": n_ctx, "total": n_ctx, "tokens": seen})
    vocab = token_texts(loaded.tokenizer, used_ids)
    store.write_results(run_dir, summary, features, examples, matrix, vocab, before_commit=before_commit)
    return summary


def _ablation(loaded, hook: str, sae, tokens, features, examples, n_contexts: int, window: int,
              memory_budget: int, progress, should_stop):
    """Each feature ablated on its first n_contexts top contexts (features/ablation.py): (the feature
    table with its ablation columns, the examples with theirs); None if asked to stop."""
    cols = {name: examples.column(name).to_numpy() for name in ("feature", "rank", "context", "position")}
    kind = np.asarray(examples.column("kind").to_pylist())
    chosen = np.flatnonzero((kind == "top") & (cols["rank"] < n_contexts))
    ctx = torch.from_numpy(cols["context"][chosen].astype(np.int64))
    effects = ablation_effects(
        loaded, hook, sae, tokens.input_ids[ctx], tokens.attention_mask[ctx],
        torch.from_numpy(cols["feature"][chosen].astype(np.int64)),
        torch.from_numpy(cols["position"][chosen].astype(np.int64)),
        activation_mask=tokens.activation_mask[ctx], window=window, memory_budget=memory_budget,
        progress=progress, should_stop=should_stop)
    if effects is None:
        return None
    per_example = np.full(len(kind), np.nan)
    per_example[chosen] = effects.window
    feats = cols["feature"][chosen]
    mean, count = per_feature(sae.d_sae, feats, effects.window)
    peak = per_feature(sae.d_sae, feats, effects.peak)[0]
    return store.with_ablation(features, examples, mean, peak, count, per_example)


class _Accumulators:
    """The streaming state of one extraction, and how it becomes tables."""

    def __init__(self, d_sae: int, top_k: int, reservoir: int, window: int, device, memory_budget: int):
        self.d_sae, self.window = d_sae, window
        self.stats = FeatureStats(d_sae, device)
        self.top = TopContexts(top_k, d_sae, window, device)
        self.reservoir = Reservoir(reservoir, d_sae, window, device)
        self.pairs = PairCounter(d_sae, max_pairs=max(1 << 20, memory_budget // 16))

    def state_bytes(self) -> int:
        tensors = [self.stats.hist, self.top.windows, self.reservoir.windows, self.pairs.keys, self.pairs.counts]
        return sum(t.numel() * t.element_size() for t in tensors)

    def add(self, z: torch.Tensor, ctx_offset: int, n_tokens: int) -> None:
        flat = z.reshape(-1, self.d_sae)
        rows, feats = flat.nonzero(as_tuple=True)
        values = flat[rows, feats]
        self.stats.add(flat, n_tokens, rows, feats, values)
        self.top.add(z, ctx_offset)
        self.reservoir.add(z, ctx_offset)
        self.pairs.add(rows, feats)

    def _example_rows(self, heap, slot: torch.Tensor, ok: torch.Tensor, kind: str, tokens, start: int,
                      quantile=None) -> dict:
        """Rows for entries heap[slot[r, f], f] where ok[r, f] (feature-major)."""
        feat, rank = ok.t().nonzero(as_tuple=True)
        s = slot[rank, feat]
        ctx, pos = heap.context[s, feat].cpu(), heap.position[s, feat].cpu()
        feat, rank, s = feat.cpu(), rank.cpu(), s.cpu()
        offsets = torch.arange(-self.window, self.window + 1)
        p = pos[:, None] + offsets
        length = tokens.context_length
        pc = p.clamp(0, length - 1)
        absolute = ctx + start
        keep = (p >= 0) & (p < length) & tokens.attention_mask[absolute[:, None], pc].bool()
        keep_start = torch.where(keep.any(dim=1), keep.float().argmax(dim=1), self.window)
        return {
            "feature": feat.numpy(), "kind": np.full(feat.numel(), kind), "rank": rank.numpy(),
            "quantile": (np.full(feat.numel(), np.nan) if quantile is None
                         else np.asarray(quantile, dtype=np.float64)[rank.numpy()]),
            "value": heap.values[s.to(heap.values.device), feat.to(heap.values.device)].cpu().numpy(), "context": absolute.numpy(), "position": pos.numpy(),
            "start": (pos + keep_start - self.window).numpy(),
            "token_ids": tokens.input_ids[absolute[:, None], pc].numpy(),
            "acts": heap.windows[s.to(heap.windows.device), feat.to(heap.windows.device)].cpu().numpy(),
            "keep": keep.numpy(),
        }

    def finish(self, tokens, start: int, quantiles, n_correlated: int, matrix_size: int, logits):
        stats = self.stats
        count = stats.count.cpu().numpy()
        n = stats.n_tokens
        top_slots = torch.arange(self.top.size, device=self.top.values.device)[:, None].expand(-1, self.d_sae)
        top = self._example_rows(self.top, top_slots, self.top.values > 0, "top", tokens, start)
        parts = [distinct_examples(top, self.top.shown)]  # a repeated sentence is shown once
        q_slots, q_ok = self.reservoir.quantile_picks(quantiles)
        repeated = torch.zeros_like(q_ok)
        repeated[1:] = q_slots[1:] == q_slots[:-1]  # few samples: several quantiles land on one
        parts.append(self._example_rows(self.reservoir, q_slots, q_ok & ~repeated, "quantile", tokens, start,
                                        quantile=quantiles))
        i, j, n_ij = self.pairs.pairs()
        correlated = top_correlated(i, j, n_ij, count, n, n_correlated)
        live = np.flatnonzero(count > 0)
        by_density = live[np.argsort(-count[live], kind="stable")][:matrix_size]
        matrix = correlation_matrix(by_density, i, j, n_ij, count, n)
        features = store.feature_table(count, n, stats.mean().cpu().numpy(), stats.max.cpu().numpy(),
                                       stats.hist.cpu().numpy(), logits, correlated)
        examples = store.examples_table(parts)
        summary = dictionary_summary(stats.count, n)
        summary["correlation_features"] = by_density.tolist()
        summary["correlation_pairs"] = int(i.size)
        summary["correlation_pairs_pruned"] = self.pairs.pruned
        used = set(np.unique(np.concatenate([p["token_ids"][p["keep"]] for p in parts])).tolist())
        if logits is not None:
            used |= set(np.unique(logits[1]).tolist()) | set(np.unique(logits[3]).tolist())
        return summary, features, examples, matrix, used
