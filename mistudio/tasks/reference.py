"""The `build_reference_model` job (gpu queue): train the offline reference causal LM once.

It is a model training, so it runs like one: on the gpu queue (holding the device's GPU lock),
in the `trainings` slot, counted in the `training_starts` tier, with its loss curve as
`training.*` events on `training:{job_id}` (TrainingMonitor, `mistudio job ID --follow` and
`mistudio submit --wait` show it as they show an SAE's). A redelivered job resumes from the
build's last checkpoint; a model already built comes back at once unless `rebuild` is set.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from mistudio import validation
from mistudio.errors import InvalidInput
from mistudio.events import TrainingCompleted, TrainingProgress, TrainingStopped
from mistudio.models.folders import REFERENCE_NAME, reference_model_path
from mistudio.models.reference_config import ReferenceConfig, for_profile, reference_card
from mistudio.queue.tasks import task
from mistudio.redis import keys
from mistudio.tasks.reporting import Reporter
from mistudio.tasks.training import FINAL_STOPS, ProgressEvents, publish_failure

_DEVICES = ("cpu", "cuda", "auto")


def validate_build_reference(params: dict) -> dict:
    """The whole ReferenceConfig (the submitter's profile, with the given overrides) as JSON, plus
    rebuild and device. Runs at submit and again in the worker: its output validates to itself."""
    params = dict(params)
    rebuild = params.pop("rebuild", False)
    if not isinstance(rebuild, bool):
        raise InvalidInput("rebuild", f"must be true or false, got {validation.preview(rebuild)}",
                           "pass rebuild=True to train it again")
    device = params.pop("device", "cpu")
    if device not in _DEVICES:
        raise InvalidInput("device", f"must be one of {', '.join(_DEVICES)}, got {validation.preview(device)}",
                           "use 'cpu' (reproducible bit for bit) or 'auto' (a GPU where there is one)")
    validation.only(params, ("rebuild", "device", *asdict(ReferenceConfig())), "build_reference_model")
    return {**asdict(for_profile(**params)), "rebuild": rebuild, "device": device}


@task("build_reference_model", queue="gpu", priority=8, rate_tier="training_starts", slot="trainings",
      channel=keys.training_channel,
      events=("training.progress", "training.completed", "training.stopped", "training.error"),
      validate=validate_build_reference, id_prefix="ref", on_failure=publish_failure,
      description="train the offline reference causal LM (GPT-2 style, on the bundled corpus) once")
def build_reference_model(job, rebuild: bool = False, device: str = "cpu", **config) -> dict:
    from mistudio.reference_model import build_reference  # torch and transformers: the worker's, not submit's

    path = reference_model_path()
    card = None if rebuild else reference_card(path)
    already_built = card is not None
    started = time.time()
    with Reporter(job, keys.training_channel(job.job_id), TrainingProgress) as report:
        if card is None:
            progress_events = ProgressEvents()
            card = build_reference(ReferenceConfig(**config), path=path, device=device,
                                   progress=lambda p: report(progress_events(p)),
                                   should_stop=job.should_stop, before_commit=job.before_commit, resume=True)
            if card.get("stopped"):
                if job.stop_reason in FINAL_STOPS:
                    report.event(TrainingStopped(step=int(card["step"]), reason=job.stop_reason))
                return {"stopped": True, "step": card["step"], "total_steps": card["total"]}
        final = {k: card[k] for k in ("heldout_loss", "heldout_perplexity", "final_train_loss", "parameters",
                                      "train_tokens_seen", "seconds")}
        report.event(TrainingCompleted(step=int(card["steps"]), final_metrics=final, duration=time.time() - started))
    return {"model": REFERENCE_NAME, "path": str(path), "already_built": already_built, **final}
