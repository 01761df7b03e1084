"""The `train_sae` job (gpu queue, priority 10): mistudio.training.prepare_and_train in the worker's
child process, with progress on `training:{training_id}` and the job record.

The job id is the training id, and the run folder is {run store}/{training_id} (MISTUDIO_RUN_STORE,
else MISTUDIO_HOME/runs): a redelivered job (its worker died) finds its checkpoints there and
resumes; on another device it does so only if that device sees the same run store, else it starts
over from step 0, and its record's `resume_note` says which and why (mistudio/run_location.py).

With `sweep` (a list of configs: many SAEs on one activation pass) member i trains in
{run store}/{training_id}-m{i}; the members report together on the job's one channel (each progress
event carries every member's metrics), and a redelivery resumes every member (from the newest step
all of them have: its `resume_note` says that step).
"""

from __future__ import annotations

import dataclasses
import time

from mistudio import cache, events, run_location, runs
from mistudio.events import TrainingCheckpoint, TrainingCompleted, TrainingError, TrainingProgress, TrainingStopped
from mistudio.events.types import CAUSAL_METRICS
from mistudio.queue.tasks import task
from mistudio.redis import keys
from mistudio.sae.config import TrainingConfig
from mistudio.sae.memory import reuse_freed_memory
from mistudio.settings import get_settings
from mistudio.sae.sweep import labels
from mistudio.tasks.reporting import Reporter
from mistudio.training import prepare_and_train, prepare_and_train_sweep, prepare_config, prepare_sweep

# Stop reasons that end the job here (cancelled, or failed on its time limit); after the others
# (lease lost, worker shutdown) another delivery resumes the run on the same channel.
FINAL_STOPS = ("cancelled", "time_limit")


def validate_train_sae(params: dict) -> dict:
    """The full TrainingConfig as JSON (defaults resolved). Runs at submit and again in the worker:
    the config's own JSON validates to itself. Whether the worker's device has CUDA for
    device='cuda' is known only there (several devices share one Redis): the job then fails at
    once, naming the device."""

    params = dict(params)
    if "sweep" in params:  # each member's full config: validates to itself, as one config does
        return {"sweep": [cfg.model_dump(mode="json") for cfg in prepare_sweep(params)]}
    layer = params.pop("layer", None)
    return prepare_config(params, layer=layer).model_dump(mode="json")


_UNITS = (("tokens_done", "tokens_total", "tokens"), ("contexts_done", "contexts_total", "contexts"))


class ProgressEvents:
    """The ML core's progress reports as TrainingProgress events (the seed's shape), each with
    the ETA of what is running. A preparation phase (loading the model, tokenizing, caching
    activations) reports its own done/total, rate and remaining time; training's ETA comes from
    the training steps' rate alone, measured from the first training report of this process, so
    the minutes spent preparing (or a resume) never inflate it. The causal metrics of the latest
    eval step (CE-loss recovered, KL: causal LMs only) ride along in every later training event
    with their `eval_step`: progress events are coalesced (the latest wins), so the eval step's
    own event may never be sent, and a viewer still gets every value measured."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.last_eval: dict = {}
        self.phase: str | None = None
        self.phase_started = 0.0
        self.first_training: tuple[int, float] | None = None  # (step, time) of the first training report

    def __call__(self, report: dict) -> TrainingProgress:
        now = self.clock()
        phase = report.get("phase", "training")
        if phase != self.phase:
            self.phase, self.phase_started = phase, now
        step, total = int(report.get("step", 0)), int(report.get("total_steps") or 0)
        event = {"step": step, "total_steps": total, "progress": 100.0 * step / total if total else 0.0,
                 "phase": phase, "metrics": {}, "estimated_remaining_seconds": None}
        if phase == "training":
            skip = {"step", "total_steps", "phase"}
            event["metrics"] = {k: v for k, v in report.items() if k not in skip and isinstance(v, (int, float))}
            if isinstance(report.get("ce_loss_recovered"), (int, float)):
                self.last_eval = {k: report[k] for k in CAUSAL_METRICS if isinstance(report.get(k), (int, float))}
                self.last_eval["eval_step"] = step
            event["metrics"] = {**self.last_eval, **event["metrics"]}
            event["estimated_remaining_seconds"] = self._training_eta(step, total, report, now)
        else:
            event.update(self._phase_fields(report, now))
        return TrainingProgress(**event)

    def _training_eta(self, step: int, total: int, report: dict, now: float) -> float | None:
        if not total:
            return None
        if self.first_training is None:
            self.first_training = (step, now)
        first_step, first_time = self.first_training
        if step > first_step:
            return (total - step) * (now - first_time) / (step - first_step)
        rate, seen = report.get("tokens_per_s"), report.get("tokens_seen")
        if rate and seen and step:  # one report so far: the trainer's own rate over its interval
            return (total - step) * (seen / step) / rate
        return None

    def _phase_fields(self, report: dict, now: float) -> dict:
        for done_key, total_key, unit in _UNITS:
            if report.get(total_key):
                done, total = float(report.get(done_key) or 0), float(report[total_key])
                rate = report.get("tokens_per_s") if unit == "tokens" else None
                if not rate and done and now > self.phase_started:
                    rate = done / (now - self.phase_started)
                remaining = (total - done) / rate if rate else (0.0 if done >= total else None)
                return {"phase_done": done, "phase_total": total, "phase_unit": unit, "phase_rate": rate,
                        "phase_remaining_seconds": remaining}
        return {}


# What a sweep's members share, shown once for the sweep (the rest is per member).
SWEEP_METRICS = ("tokens_per_s", "tokens_seen", "peak_rss_mb", "peak_cuda_allocated_mb")


class SweepProgressEvents:
    """A sweep's member reports as one TrainingProgress per reported step, sent once the last
    member has reported it (members step in lockstep and share log_every): `members` holds each
    member's metrics (with its own latest eval), `metrics` what they share (SWEEP_METRICS), and
    the ETA is the sweep's. One event per step, so coalescing progress never drops a member."""

    def __init__(self, training_ids: list[str], names: list[str], clock=time.monotonic):
        self.training_ids, self.names = training_ids, names
        self.members = [ProgressEvents(clock) for _ in training_ids]
        self.latest: list[TrainingProgress | None] = [None] * len(training_ids)

    def __call__(self, index: int, report: dict) -> TrainingProgress | None:
        self.latest[index] = self.members[index](report)
        if index != len(self.members) - 1 or any(e is None for e in self.latest):
            return None
        lead = self.latest[0]
        return dataclasses.replace(lead, metrics={k: v for k, v in lead.metrics.items() if k in SWEEP_METRICS},
                                   members=[{"training_id": tid, "label": name, "metrics": event.metrics}
                                            for tid, name, event in zip(self.training_ids, self.names, self.latest)])


def publish_failure(training_id: str, params: dict, error: str) -> None:
    """The job ended failed or dead (see queue.tasks): end the channel with training.error."""
    events.publish(keys.training_channel(training_id), TrainingError(error=error))


@task("train_sae", queue="gpu", priority=10, rate_tier="training_starts", slot="trainings",
      channel=keys.training_channel,
      events=("training.progress", "training.checkpoint", "training.completed", "training.stopped", "training.error"),
      validate=validate_train_sae, id_prefix="tr", on_failure=publish_failure,
      description="train an SAE on a model's activations (a retry resumes from its checkpoint)")
def train_sae(job, **config) -> dict:
    reuse_freed_memory()  # this process is the job's own child: keep freed blocks for the next step (sae/memory.py)
    if "sweep" in config:
        return train_sweep(job, config["sweep"])
    training_id = job.job_id
    run_dir = runs.for_training(training_id).path
    cfg = TrainingConfig.model_validate(config)
    started = time.time()
    device = get_settings().device_id
    resumed = run_location.note_resume(job, run_dir)  # on the record: resumed, or restarted from 0 and why
    with Reporter(job, keys.training_channel(training_id), TrainingProgress) as report:
        def on_checkpoint(path, step):
            run_location.record_checkpoint(job, step)  # so another device knows where the run's progress is
            report.event(TrainingCheckpoint(step=int(step), path=str(path)))
            try:
                cache.invalidate_training(training_id)  # checkpoint lists and feature stats are stale now
            except Exception:
                pass

        # A failure raises on: its training.error comes from publish_failure once the job is recorded failed.
        progress_events = ProgressEvents()
        metrics = prepare_and_train(cfg, run_dir, progress=lambda m: report(progress_events(m)),
                        on_checkpoint=on_checkpoint, should_stop=job.should_stop, before_commit=job.before_commit)
        if metrics.get("stopped"):
            if job.stop_reason in FINAL_STOPS:  # the end, as an extraction's: followers stop waiting
                report.event(TrainingStopped(step=int(metrics.get("step", 0)), reason=job.stop_reason))
            return {"training_id": training_id, "run_dir": str(run_dir), "device": device, "stopped": True,
                    "resume_note": resumed, "final_metrics": metrics}
        final = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        report.event(TrainingCompleted(step=int(metrics.get("step", cfg.steps)), final_metrics=final,
                                       sae_path=metrics.get("export_dir"), duration=time.time() - started))
    return {"training_id": training_id, "run_dir": str(run_dir), "device": device, "resume_note": resumed,
            "sae_path": metrics.get("export_dir"), "final_metrics": final}


def train_sweep(job, sweep: list[dict]) -> dict:
    """train_sae with many SAEs on one activation pass: member i in runs/{job id}-m{i}."""
    training_id = job.job_id
    configs = [TrainingConfig.model_validate(cfg) for cfg in sweep]
    folders = [runs.sweep_member(training_id, i) for i in range(len(configs))]
    ids, names = [f.training_id for f in folders], labels(sweep)
    started = time.time()
    device = get_settings().device_id
    resumed = run_location.note_resume(job, [f.path for f in folders])  # as a single training's
    with Reporter(job, keys.training_channel(training_id), TrainingProgress) as report:
        def on_checkpoint(index, path, step):
            run_location.record_checkpoint(job, step)  # members checkpoint at the same steps
            report.event(TrainingCheckpoint(step=int(step), path=str(path), member=index, training_id=ids[index]))
            try:
                cache.invalidate_training(ids[index])  # checkpoint lists and feature stats are stale now
            except Exception:
                pass

        def member_progress(index, metrics):
            event = sweep_events(index, metrics)
            if event is not None:
                report(event)

        progress_events, sweep_events = ProgressEvents(), SweepProgressEvents(ids, names)
        results = prepare_and_train_sweep(configs, [f.path for f in folders],
                                          progress=lambda m: report(progress_events(m)),
                                          member_progress=member_progress, on_checkpoint=on_checkpoint,
                                          should_stop=job.should_stop, before_commit=job.before_commit)
        step = int(results[0].get("step", 0))
        members = [{"training_id": tid, "label": name, "run_dir": str(f.path), "sae_path": m.get("export_dir"),
                    "final_metrics": {k: v for k, v in m.items() if isinstance(v, (int, float))}}
                   for tid, name, f, m in zip(ids, names, folders, results)]
        shared = {k: v for k, v in members[0]["final_metrics"].items() if k in SWEEP_METRICS}
        shared.update(step=step, members=len(members))
        if results[0].get("stopped"):
            if job.stop_reason in FINAL_STOPS:
                report.event(TrainingStopped(step=step, reason=job.stop_reason))
            return {"training_id": training_id, "device": device, "resume_note": resumed, "stopped": True,
                    "final_metrics": shared, "members": members}
        report.event(TrainingCompleted(step=step, final_metrics=shared, duration=time.time() - started,
                                       members=members))
    return {"training_id": training_id, "device": device, "resume_note": resumed, "final_metrics": shared,
            "members": members}
