"""Where a training run is, across devices that share nothing but Redis.

A run folder lives in its device's run store (`settings.run_store`: MISTUDIO_RUN_STORE, a path
every device mounts, else MISTUDIO_HOME/runs, local to the device). Each committed checkpoint
records on the training's job record which device wrote it, at which step, into which store.
From that:

- a redelivered training says on its record (`resume_note`) whether it resumed from a
  checkpoint it sees, or started over from step 0 and why (no checkpoint on this device: the
  store is local, or not the same mount as the writer's);
- a feature extraction, steer or report asked for on a device that does not see the run gets
  an error naming the device that has it, and the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mistudio import runs
from mistudio.errors import InvalidInput
from mistudio.queue import records
from mistudio.redis.connection import get_client
from mistudio.settings import Settings, get_settings

logger = logging.getLogger("mistudio.run_location")

# Job record fields (the training's record; its job id is the training id).
DEVICE, STEP, STORE, NOTE = "checkpoint_device", "checkpoint_step", "checkpoint_store", "resume_note"


def record_checkpoint(job, step: int, settings: Settings | None = None) -> None:
    """After a checkpoint is committed: this device wrote step `step` into its run store (best
    effort: a record that lags only makes a later note less precise, never wrong about data)."""
    settings = settings or get_settings()
    try:
        records.update_if(job.results, job.job_id, ("running",), if_lease=job.lease_id,
                          **{DEVICE: settings.device_id, STEP: int(step), STORE: str(settings.run_store)})
    except Exception as exc:
        logger.warning("job %s: could not record checkpoint step %s (%s)", job.job_id, step, exc)


def resume_note(record: dict | None, attempt: int, local_step: int, settings: Settings) -> str | None:
    """What a delivery of a training will do, in words, from its record (the checkpoint the
    earlier attempts recorded) and the newest checkpoint this device sees. None: a first
    attempt with nothing to resume (nothing to explain)."""
    record = record or {}
    device, store = record.get(DEVICE), record.get(STORE)
    step = int(record.get(STEP) or 0)
    here = settings.device_id
    if local_step and (not step or local_step >= step or device == here):
        by = f" (written by device {device})" if device and device != here else ""
        return f"resumed from step {local_step} on device {here}{by}"
    if step and device != here:
        if settings.run_store_shared:
            why = (f"run store {settings.run_store} does not hold it: mount the same shared store as device "
                   f"{device} ({store}) at MISTUDIO_RUN_STORE on every device")
        else:
            why = (f"run store is local ({settings.run_store}; device {device} wrote to its own {store}): "
                   "set MISTUDIO_RUN_STORE to a path every device mounts to resume instead")
        start = f"resumed from step {local_step}" if local_step else "restarted from step 0"
        return f"{start} on device {here}: device {device}'s checkpoint at step {step} is not here; {why}"
    if attempt > 1:
        return (f"restarted from step 0 on device {here}: no checkpoint was committed before attempt "
                f"{attempt - 1} ended")
    return None


def note_resume(job, run_dirs, settings: Settings | None = None) -> str | None:
    """At the start of a training delivery: write why it resumes or restarts on its record
    (`resume_note`, shown by `mistudio job ID`) and return it. run_dirs: the run's folder, or a
    sweep's member folders (a sweep resumes from the newest step all members have)."""
    # why: torch; the ML core's own rule for a complete checkpoint (the caller, a training, has torch)
    from mistudio.sae.checkpoint import latest_step

    settings = settings or get_settings()
    try:
        record = records.get(job.results, job.job_id)
    except Exception as exc:  # Redis away: the note says less, the training goes on
        logger.warning("job %s: could not read its record (%s)", job.job_id, exc)
        record = None
    folders = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    note = resume_note(record, job.attempt, min(latest_step(folder) for folder in folders), settings)
    if note:
        logger.info("job %s: %s", job.job_id, note)
        try:
            records.update_if(job.results, job.job_id, ("running",), if_lease=job.lease_id, **{NOTE: note})
        except Exception as exc:
            logger.warning("job %s: could not write its resume note (%s)", job.job_id, exc)
    return note


class RunElsewhere(InvalidInput):
    """The run is not (or only unfinished) in this device's run store, and Redis says which
    device wrote it last."""

    def __init__(self, training_id: str, device: str, store: str | None, settings: Settings, partial: bool):
        self.device = device
        here = f"this device's run store ({settings.run_store}, device {settings.device_id})"
        where = f"{here} holds only an unfinished copy of run {training_id!r}" if partial else \
            f"run {training_id!r} is not in {here}"
        super().__init__(
            "training_id", f"{where}: device {device} wrote it to {store}",
            f"set MISTUDIO_RUN_STORE to a path every device mounts (then device {device}'s runs are there too), "
            f"or run this on device {device}")


def locate(training_id: str, settings: Settings | None = None) -> runs.RunFolder:
    """The folder of a run in this device's run store. RunElsewhere when it is missing here, or
    here but unfinished (no export) while Redis says another device wrote it last; else as
    runs.existing (InvalidInput naming training_id for an unknown run)."""
    settings = settings or get_settings()
    folder = runs.for_training(training_id, settings)
    if folder.exported():
        return folder
    record = _record(training_id)
    device = (record or {}).get(DEVICE)
    if device and device != settings.device_id:
        raise RunElsewhere(training_id, device, record.get(STORE), settings, partial=folder.exists())
    return runs.existing(training_id, settings)


def _record(training_id: str) -> dict | None:
    """The training's job record; a sweep member's ({job id}-m{i}: runs.sweep_member) is its sweep's."""
    try:
        client = get_client("results")
        record = records.get(client, training_id)
        sweep = runs.sweep_of(training_id)
        if record is None and sweep:
            record = records.get(client, sweep)
        return record
    except Exception:  # no Redis: the local answer stands
        return None
