"""An SAE training run end to end, from a config: model -> corpus -> activations -> SAE.

No Redis in here (the `train_sae` job wraps it): progress goes to callbacks.

    config = prepare_config({"architecture": "topk"})   # checks everything, fills defaults
    result = prepare_and_train(config, run_dir, progress=print)

The run folder (its layout: mistudio/runs.py) gets run.json (what was trained on: model,
hook point, dataset, which contexts were held out for feature analysis), the trainer's
checkpoints and metrics, and the SAELens-format export. A run interrupted at any point
resumes from its latest checkpoint when started again.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

from mistudio.data.corpora import check_corpus
from mistudio.errors import InvalidInput
from mistudio.models.folders import inspect_model
from mistudio.models.hook_names import validate_hook_point_in
from mistudio.runs import RunFolder, activation_cache
from mistudio.sae.config import TrainingConfig, check_memory
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
    from mistudio.data.activations import ActivationStore, build_activation_cache
    from mistudio.data.processed import process_dataset
    from mistudio.models.loading import load_model
    from mistudio.sae.evaluation import CELossEvaluator, has_lm_head
    from mistudio.sae.run import train_and_export

    settings = get_settings()
    run_dir = Path(run_dir)
    started = time.time()
    report = progress or (lambda data: None)

    def phase(name: str):
        return lambda data: report({"phase": name, "step": 0, "total_steps": config.steps, **data})

    phase("loading model")({})  # so a viewer sees what the first seconds are spent on
    loaded = load_model(config.model, device=None if config.device == "auto" else config.device)
    dataset = process_dataset(config.dataset, loaded, None, None, phase("tokenizing"))
    tokens = dataset.tokens
    split = _holdout_split(tokens.n_contexts, tokens.context_length)
    RunFolder(run_dir).write_info({
        "training_id": run_dir.name, "config": config.model_dump(mode="json"), "model": loaded.name,
        "hook_point": config.hook_point, "dataset_id": dataset.dataset_id, "dataset_path": str(dataset.path),
        "train_contexts": [0, split], "holdout_contexts": [split, tokens.n_contexts],
        "context_length": tokens.context_length, "created": started,
    })
    cache_dir = activation_cache(settings.data_dir, dataset.dataset_id, config.hook_point, (0, split))
    cache = build_activation_cache(loaded, config.hook_point, _subset(tokens, 0, split), cache_dir,
                                   progress=phase("caching activations"))
    store = ActivationStore.from_cache(cache, config.batch_size, seed=config.seed,
                                       memory_budget_bytes=settings.memory_budget)
    evaluator = None
    if evaluate and has_lm_head(loaded.model) and split < tokens.n_contexts:
        held = _subset(tokens, split, min(tokens.n_contexts, split + 16))
        evaluator = CELossEvaluator(loaded, config.hook_point, held.input_ids, held.attention_mask)
    metrics = train_and_export(config, run_dir, store, on_progress=report, on_checkpoint=on_checkpoint,
                           should_stop=should_stop, before_commit=before_commit, evaluator=evaluator)
    metrics["duration_s"] = time.time() - started
    return metrics


