"""The `train_sae` job (gpu queue, priority 10): mistudio.training.train in the worker's
child process, with progress on `training:{training_id}` and the job record.

The job id is the training id, and the run folder is MISTUDIO_HOME/runs/{training_id}:
a redelivered job (its worker died) finds its checkpoints there and resumes.
"""

from __future__ import annotations

import time

from mistudio.queue.tasks import task
from mistudio.redis import keys
from mistudio.tasks.reporting import Reporter


def validate_train_sae(params: dict) -> dict:
    """The full TrainingConfig as JSON (defaults resolved). Runs at submit and again in the worker:
    the config's own JSON validates to itself. Whether the worker's device has CUDA for
    device='cuda' is known only there (several devices share one Redis): the job then fails at
    once, naming the device."""
    from mistudio.training import prepare_config

    params = dict(params)
    layer = params.pop("layer", None)
    return prepare_config(params, layer=layer).model_dump(mode="json")


def _progress_event(metrics: dict, started: float) -> dict:
    """The trainer's metrics as a training.progress event (the seed's shape)."""
    step, total = int(metrics.get("step", 0)), int(metrics.get("total_steps") or 0)
    elapsed = time.time() - started
    eta = None
    if "phase" not in metrics and step and total:
        eta = (total - step) * elapsed / step
    skip = {"step", "total_steps", "phase"}
    return {
        "step": step,
        "total_steps": total,
        "progress": 100.0 * step / total if total else 0.0,
        "phase": metrics.get("phase", "training"),
        "metrics": {k: v for k, v in metrics.items() if k not in skip and isinstance(v, (int, float))},
        "estimated_remaining_seconds": eta,
    }


def publish_failure(training_id: str, params: dict, error: str) -> None:
    """The job ended failed or dead (see queue.tasks): end the channel with training.error."""
    from mistudio import events

    events.publish(keys.training_channel(training_id), "training.error", {"error": error})


@task("train_sae", validate=validate_train_sae, id_prefix="tr", on_failure=publish_failure)
def train_sae(job, **config) -> dict:
    from mistudio import cache
    from mistudio.sae.config import TrainingConfig
    from mistudio.settings import get_settings
    from mistudio.training import train

    from mistudio.sae.memory import reuse_freed_memory

    reuse_freed_memory()  # this process is the job's own child: keep freed blocks for the next step (sae/memory.py)
    training_id = job.job_id
    run_dir = get_settings().training_run_dir(training_id)
    cfg = TrainingConfig.model_validate(config)
    started = time.time()
    with Reporter(job, keys.training_channel(training_id), "training.progress") as report:
        def on_checkpoint(path, step):
            report.event("training.checkpoint", {"step": int(step), "path": str(path)})
            try:
                cache.invalidate_training(training_id)  # checkpoint lists and feature stats are stale now
            except Exception:
                pass

        # A failure raises on: its training.error comes from publish_failure once the job is recorded failed.
        metrics = train(cfg, run_dir, progress=lambda m: report(_progress_event(m, started)),
                        on_checkpoint=on_checkpoint, should_stop=job.should_stop, before_commit=job.before_commit)
        if metrics.get("stopped"):
            return {"training_id": training_id, "run_dir": str(run_dir), "stopped": True, "final_metrics": metrics}
        final = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        report.event("training.completed", {"step": int(metrics.get("step", cfg.steps)), "final_metrics": final,
                                            "sae_path": metrics.get("export_dir"), "duration": time.time() - started})
    return {"training_id": training_id, "run_dir": str(run_dir), "sae_path": metrics.get("export_dir"),
            "final_metrics": final}
