"""An SAE training run end to end, from a config: model -> corpus -> activations -> SAE.

No Redis in here (the `train_sae` job wraps it): progress goes to callbacks.

    config = prepare_config({"architecture": "topk"})   # checks everything, fills defaults
    result = prepare_and_train(config, run_dir, progress=print)

    configs = prepare_sweep({"sweep": [{"k": 32}, {"k": 64, "expansion_factor": 16}]})
    results = prepare_and_train_sweep(configs, [run_a, run_b], progress=print)   # one pass, two SAEs

The run folder (its layout: mistudio/runs.py) gets run.json (what was trained on: model,
hook point, dataset, which contexts were held out for feature analysis), the trainer's
checkpoints and metrics, and the SAELens-format export. A sweep gives every member a run folder
of its own (sae/multi.py trains them on one stream; run.json names the other members). A run interrupted at any point
resumes from its latest checkpoint when started again.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mistudio.data.corpora import check_corpus
from mistudio.errors import InvalidInput
from mistudio.models.folders import inspect_model
from mistudio.models.hook_names import validate_hook_point_in
from mistudio.runs import RunFolder, activation_cache
from mistudio.sae.config import TrainingConfig, check_memory
from mistudio.sae.memory import check_sweep_memory
from mistudio.sae.sweep import MAX_MEMBERS, check_shared
from mistudio.settings import get_settings
from mistudio.validation import preview

Progress = Callable[[dict], None]
HOLDOUT_FRACTION_MAX = 0.2  # never hold out more than this share of the corpus for feature analysis


def model_config(model: str | None):
    """(name, transformers config) without loading weights; InvalidInput for an unknown model."""
    from transformers import AutoConfig

    # why: torch; validating a config (at submit) stays torch-free
    from mistudio.models.loading import resolve_model_path

    name, path = resolve_model_path(model, download=False)
    return name, AutoConfig.from_pretrained(path, local_files_only=True)


def prepare_config(params: dict, layer: int | None = None):
    """A validated TrainingConfig from user parameters, with the model's width filled in.

    Defaults: the bundled model, the offline corpus, the residual stream after the middle
    layer, TopK with the profile's k and expansion factor. Raises InvalidInput naming the
    field for anything wrong (before any job is queued, and again in the worker). Reads the
    model's config.json as plain JSON: no torch or transformers import, so it takes well under
    a second; sizes are checked against MISTUDIO_MEMORY_BUDGET."""

    params = dict(params)
    model = params.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidInput("model", f"must be a hub id or folder string, got {preview(model)}",
                           "pass model='openai-community/gpt2' or a local folder")
    name, _, metadata = inspect_model(model)
    if params.get("hook_point") is None:
        layer = metadata["n_layers"] // 2 if layer is None else layer
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < metadata["n_layers"]:
            raise InvalidInput("layer", f"must be 0..{metadata['n_layers'] - 1} for {name}, got {preview(layer)}",
                               f"pick a layer below {metadata['n_layers']}")
        params["hook_point"] = f"blocks.{layer}.hook_resid_post"
    elif layer is not None:
        raise InvalidInput("layer", "give layer or hook_point, not both", "remove one of them")
    params.setdefault("architecture", "topk")
    cfg = TrainingConfig.model_validate(params)  # InvalidInput naming the field (unknown fields, wrong types...)
    validate_hook_point_in(metadata, cfg.hook_point)
    cfg = cfg.with_d_in(metadata["d_model"])
    check_memory(cfg, get_settings().memory_budget)
    if cfg.dataset not in (None, "stdlib"):
        check_corpus(cfg.dataset, "text", field="dataset")
    return cfg


_WHERE = ("layer", "hook_point")


def prepare_sweep(params: dict) -> list[TrainingConfig]:
    """The validated configs of a sweep: params["sweep"] is a list of dicts, each the fields one SAE
    changes from the shared params (e.g. {"k": 64, "expansion_factor": 16}, {"layer": 2}). Every
    member is checked as prepare_config checks one config, then what they must share (one stream:
    sae/sweep.py) and their memory together; InvalidInput names the member, e.g. "sweep[1].k"."""
    params = dict(params)
    sweep = params.pop("sweep")
    if not isinstance(sweep, list) or not sweep:
        raise InvalidInput("sweep", f"must be a non-empty list of config dicts, got {preview(sweep)}",
                           "pass e.g. sweep=[{'k': 32}, {'k': 64}]")
    if len(sweep) > MAX_MEMBERS:
        raise InvalidInput("sweep", f"has {len(sweep)} members, more than {MAX_MEMBERS}", "split it into several jobs")
    shared_where = {k: params.pop(k) for k in _WHERE if k in params}
    configs = []
    for i, member in enumerate(sweep):
        if not isinstance(member, dict):
            raise InvalidInput(f"sweep[{i}]", f"must be a dict of config fields, got {preview(member)}",
                               "pass e.g. {'k': 64}")
        if "sweep" in member:
            raise InvalidInput(f"sweep[{i}].sweep", "a member cannot hold a sweep", "list every SAE in one sweep")
        where = {k: member[k] for k in _WHERE if k in member} or shared_where  # a member's own place wins
        merged = {**params, **{k: v for k, v in member.items() if k not in _WHERE}, **where}
        try:
            configs.append(prepare_config(merged, layer=merged.pop("layer", None)))
        except InvalidInput as e:
            raise InvalidInput(f"sweep[{i}].{e.field}", e.problem, e.fix) from None
    check_shared(configs)
    check_sweep_memory(configs, get_settings().memory_budget)
    return configs


def _holdout_split(n_contexts: int, context_length: int) -> int:
    """Index of the first held-out context: the tail of the corpus is kept for feature analysis."""
    wanted = math.ceil(get_settings().profile.feature_tokens / max(1, context_length))
    held = min(wanted, int(n_contexts * HOLDOUT_FRACTION_MAX))
    return n_contexts - max(1, held) if n_contexts > 1 else n_contexts


def _subset(tokens, start: int, stop: int):
    # why: torch; validating a config (at submit) stays torch-free
    from mistudio.data.packing import PackedTokens

    return PackedTokens(tokens.input_ids[start:stop], tokens.attention_mask[start:stop],
                        tokens.activation_mask[start:stop])


def prepare_and_train(config, run_dir: Path | str, *, progress: Progress | None = None, on_checkpoint=None,
          should_stop: Callable[[], bool] | None = None, before_commit: Callable[[int], bool] | None = None,
          evaluate: bool = True) -> dict:
    """Prepare what the SAE trains on (load the model, tokenize the corpus, cache the training
    contexts' activations), then train_and_export in run_dir (resuming a started run); returns the
    final metrics and where the SAE is."""
    # why: torch; validating a config (at submit) stays torch-free
    from mistudio.sae.run import train_and_export

    started = time.time()
    data = _prepare([config], [Path(run_dir)], progress, evaluate)
    metrics = train_and_export(config, run_dir, data.streams[config.hook_point], on_progress=progress,
                               on_checkpoint=on_checkpoint, should_stop=should_stop, before_commit=before_commit,
                               evaluator=data.evaluators.get(config.hook_point))
    metrics["duration_s"] = time.time() - started
    return metrics


def prepare_and_train_sweep(configs: list, run_dirs: list, *, progress: Progress | None = None,
                            member_progress: Callable[[int, dict], None] | None = None,
                            on_checkpoint: Callable[[int, Path, int], None] | None = None,
                            should_stop: Callable[[], bool] | None = None,
                            before_commit: Callable[[int], bool] | None = None, evaluate: bool = True) -> list[dict]:
    """prepare_and_train for a sweep (configs from prepare_sweep): the model runs once over the
    corpus for every hook point the members read, then sae/multi.py trains all members on one
    stream, member i in run_dirs[i] (resuming every member of a started sweep). `progress` gets
    the shared preparation phases, `member_progress(i, report)` each member's training reports,
    `on_checkpoint(i, path, step)` each member's checkpoints. Returns each member's final metrics."""
    # why: torch; validating a config (at submit) stays torch-free
    from mistudio.sae.multi import Member, train_and_export_many

    started = time.time()
    run_dirs = [Path(d) for d in run_dirs]
    data = _prepare(configs, run_dirs, progress, evaluate)

    def member(i: int, cfg, run_dir: Path) -> Member:
        return Member(cfg, run_dir,
                      on_progress=(lambda m: member_progress(i, m)) if member_progress else None,
                      on_checkpoint=(lambda path, step: on_checkpoint(i, path, step)) if on_checkpoint else None,
                      evaluator=data.evaluators.get(cfg.hook_point))

    results = train_and_export_many([member(i, cfg, d) for i, (cfg, d) in enumerate(zip(configs, run_dirs))],
                                    data.streams, should_stop=should_stop, before_commit=before_commit)
    for metrics in results:
        metrics["duration_s"] = time.time() - started
    return results


@dataclass
class _Prepared:
    streams: dict  # hook point -> ActivationStore
    evaluators: dict  # hook point -> CELossEvaluator (models with an LM head)


def _prepare(configs: list, run_dirs: list[Path], progress: Progress | None, evaluate: bool) -> _Prepared:
    """The data side of a run or sweep (configs share model, dataset, device, batch size, steps):
    load the model, tokenize, write each run.json, cache the training contexts' activations at
    every hook point in one pass, and open one aligned stream per hook point."""
    # why: torch; validating a config (at submit) stays torch-free
    from mistudio.data.activations import ActivationStore, build_activation_caches
    from mistudio.data.processed import process_dataset
    from mistudio.models.loading import load_model
    from mistudio.sae.checkpoint import latest_step
    from mistudio.sae.evaluation import CELossEvaluator, has_lm_head

    settings = get_settings()
    first = configs[0]
    started = time.time()
    report = progress or (lambda data: None)

    def phase(name: str):
        return lambda data: report({"phase": name, "step": 0, "total_steps": first.steps, **data})

    phase("loading model")({})  # so a viewer sees what the first seconds are spent on
    loaded = load_model(first.model, device=None if first.device == "auto" else first.device)
    dataset = process_dataset(first.dataset, loaded, None, None, phase("tokenizing"))
    tokens = dataset.tokens
    split = _holdout_split(tokens.n_contexts, tokens.context_length)
    for i, (config, run_dir) in enumerate(zip(configs, run_dirs)):
        sweep = {"sweep_member": i, "sweep_members": [d.name for d in run_dirs]} if len(configs) > 1 else {}
        folder = RunFolder(run_dir)
        folder.write_info({
            "training_id": run_dir.name, "config": config.model_dump(mode="json"), "model": loaded.name,
            "hook_point": config.hook_point, "dataset_id": dataset.dataset_id, "dataset_path": str(dataset.path),
            "dataset_config": dataset.config,  # so another device can make the same dataset (data/processed.for_run)
            # Which device wrote the run, attempt by attempt (several may, through a shared run store).
            "device": settings.device_id, "written_by": folder.writers() + [
                {"device": settings.device_id, "run_store": str(settings.run_store), "started": started,
                 "from_step": latest_step(run_dir)}],
            "train_contexts": [0, split], "holdout_contexts": [split, tokens.n_contexts],
            "context_length": tokens.context_length, "created": started, **sweep,
        })
    hooks = list(dict.fromkeys(cfg.hook_point for cfg in configs))
    caches = build_activation_caches(
        loaded, {hook: activation_cache(settings.data_dir, dataset.dataset_id, hook, (0, split)) for hook in hooks},
        _subset(tokens, 0, split), progress=phase("caching activations"))
    budget = settings.memory_budget // len(hooks)  # one shuffle buffer per hook point
    streams = {hook: ActivationStore.from_cache(caches[hook], first.batch_size, seed=first.seed,
                                                memory_budget_bytes=budget) for hook in hooks}
    evaluators = {}
    if evaluate and has_lm_head(loaded.model) and split < tokens.n_contexts:
        held = _subset(tokens, split, min(tokens.n_contexts, split + 16))
        evaluators = {hook: CELossEvaluator(loaded, hook, held.input_ids, held.attention_mask) for hook in hooks}
    return _Prepared(streams, evaluators)
