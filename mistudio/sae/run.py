"""`train_and_export`: train an SAE on an activation iterator in a run folder (resuming from its
latest checkpoint), then export it. Resumable and idempotent.

It writes the run folder's checkpoints, metrics and export (where: mistudio/runs.py).
A redelivered job calls this again with the same run_dir: it resumes from the latest
checkpoint (a finished run just re-exports), so no work is lost or done twice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Iterable

import torch

from mistudio.errors import InvalidInput
from mistudio.runs import RunFolder
from mistudio.sae.checkpoint import latest_checkpoint
from mistudio.sae.config import TrainingConfig
from mistudio.sae.export import export_saelens
from mistudio.sae.trainer import Trainer
from mistudio.tempdirs import remove_abandoned



def train_and_export(
    config: TrainingConfig,
    run_dir: Path | str,
    activations: Iterable[torch.Tensor],
    on_progress: Callable[[dict], None] | None = None,
    on_checkpoint: Callable[[Path, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    before_commit: Callable[[int], bool] | None = None,
    evaluator: Callable | None = None,
) -> dict:
    """Train (or resume) in run_dir, export the SAE there, return the final metrics.

    Returns metrics with "stopped": True (and no export) when should_stop() ended it.
    Raises CommitRefused when before_commit refuses a checkpoint or the export.
    """
    trainer = open_trainer(config, run_dir, latest_checkpoint(prepare_run_dir(run_dir)), on_progress=on_progress,
                           on_checkpoint=on_checkpoint, should_stop=should_stop, before_commit=before_commit,
                           evaluator=evaluator)
    metrics = trainer.train(activations)
    if metrics.get("stopped"):
        return metrics
    return export_run(trainer, metrics, before_commit)


def prepare_run_dir(run_dir: Path | str) -> Path:
    """The run folder, made, without what an attempt killed mid-write left behind."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for path in (run_dir, RunFolder(run_dir).checkpoints):
        remove_abandoned(path)
    return run_dir


def open_trainer(config: TrainingConfig, run_dir: Path | str, checkpoint: Path | None, *,
                 on_progress: Callable[[dict], None] | None = None, **callbacks) -> Trainer:
    """A Trainer for run_dir: resumed from `checkpoint` (its metrics.jsonl cut back to that step), or
    fresh (None: metrics.jsonl started over). Every report is appended to metrics.jsonl, then
    passed to on_progress."""
    run_dir = Path(run_dir)
    metrics_path = RunFolder(run_dir).metrics

    def progress(metrics: dict) -> None:
        with metrics_path.open("a") as f:
            f.write(json.dumps(_json_safe(metrics)) + "\n")
        if on_progress is not None:
            on_progress(metrics)

    if checkpoint is not None:
        trainer = Trainer.resume(run_dir, checkpoint, on_progress=progress, **callbacks)
        if config.with_d_in(trainer.config.d_in).model_dump() != trainer.config.model_dump():
            raise InvalidInput(
                "run_dir", f"{run_dir} holds a run with a different config", "use a new run_dir for a new config"
            )
        _truncate_history(metrics_path, trainer.step)
    else:
        metrics_path.unlink(missing_ok=True)
        trainer = Trainer(config, run_dir, on_progress=progress, **callbacks)
    return trainer


def export_run(trainer: Trainer, metrics: dict, before_commit: Callable[[int], bool] | None = None) -> dict:
    """Export a trained SAE (SAELens layout) into its run folder; the metrics with export_dir added."""
    folder = RunFolder(trainer.run_dir)
    export_saelens(
        trainer.inference_sae(),
        folder.export,
        trainer.config,
        log_feature_sparsity=trainer.firing.log_feature_sparsity(),
        metrics=metrics,
        before_commit=before_commit,
        step=trainer.step,
    )
    metrics["export_dir"] = str(folder.export)
    return metrics


def _truncate_history(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


def _json_safe(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


