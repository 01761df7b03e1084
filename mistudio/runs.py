"""A training run's folder, {run store}/{training_id}/: the one module that knows its layout.

The run store is MISTUDIO_RUN_STORE (a path every device mounts, e.g. NFS: a run written on one
device is resumed, analysed and reported on by another), else MISTUDIO_HOME/runs (local to the
device). Datasets and activation caches stay per device (MISTUDIO_HOME/data): they are rebuilt
from the run's config where they are missing, so only runs need to be shared.

    run.json              what was trained on: model, hook point, dataset, held-out contexts
    checkpoints/step_*/   trainer checkpoints, latest N (sae/checkpoint.py writes inside one)
    metrics.jsonl         every progress report of the trainer, one JSON object a line
    sae/                  the final SAELens-format export (cfg.json, sae_weights.safetensors)
    features/             feature-analysis results (features/store.py writes inside it)
    report.html           the offline report (report.py)

A sweep (one train_sae job training many SAEs on one activation pass) gives member i the run
folder of its own id, `{training_id}-m{i}` (`sweep_member`): every tool that takes a training id
(features, report, steer) takes a member's.

Activation caches are not in a run: runs on the same tokens and hook point share one, under
data/activations/ (`activation_cache`). No Redis here (the ML core uses it).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mistudio.errors import InvalidInput
from mistudio.queue.ids import check_job_id
from mistudio.settings import Settings, get_settings

RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
EXPORT = "sae"
# The SAELens layout's files in EXPORT (sae/export.py writes and reads them by these names).
EXPORT_WEIGHTS = "sae_weights.safetensors"
EXPORT_CONFIG = "cfg.json"
EXPORT_SPARSITY = "sparsity.safetensors"
FEATURES = "features"
FEATURE_TABLE = "features.parquet"  # in FEATURES: one row per feature (features/store.py writes it)
REPORT = "report.html"
_SWEEP_MEMBER = re.compile(r"^(.+)-m\d+$")  # sweep_member's ids


@dataclass(frozen=True)
class RunFolder:
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def training_id(self) -> str:
        return self.path.name

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def export(self) -> Path:
        return self.path / EXPORT

    @property
    def export_weights(self) -> Path:
        return self.export / EXPORT_WEIGHTS

    @property
    def export_config(self) -> Path:
        return self.export / EXPORT_CONFIG

    @property
    def features(self) -> Path:
        return self.path / FEATURES

    @property
    def report(self) -> Path:
        return self.path / REPORT

    def exists(self) -> bool:
        """A run: its run.json is written once its tokens are known."""
        return self.run_file.is_file()

    def exported(self) -> bool:
        return self.export_weights.is_file()

    def write_info(self, info: dict) -> None:
        """run.json, atomically (a reader never sees half of it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{RUN_FILE}.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(self.run_file)

    def writers(self) -> list[dict]:
        """run.json's `written_by`: the device, run store and start step of each attempt so far."""
        try:
            return list(json.loads(self.run_file.read_text()).get("written_by") or [])
        except (OSError, ValueError, AttributeError):
            return []

    def read_info(self) -> dict:
        if not self.exists():
            raise InvalidInput("training_id", f"no training run at {self.path}", "train an SAE first (mistudio train)")
        return json.loads(self.run_file.read_text())


def check_store(settings: Settings | None = None) -> Path:
    """The run store, ready before a worker starts: a shared one (MISTUDIO_RUN_STORE) must
    exist, since a missing mount would quietly put runs on this device's own disk; the local
    default is created."""
    settings = settings or get_settings()
    store = settings.run_store
    if settings.run_store_shared and not store.is_dir():
        raise InvalidInput("MISTUDIO_RUN_STORE", f"{store} is not a folder on this device (device "
                           f"{settings.device_id})", "mount the shared run store there (e.g. NFS), or create the "
                           "folder; unset MISTUDIO_RUN_STORE for a store local to this device")
    store.mkdir(parents=True, exist_ok=True)
    if not os.access(store, os.W_OK | os.X_OK):
        raise InvalidInput("MISTUDIO_RUN_STORE" if settings.run_store_shared else "MISTUDIO_HOME",
                           f"{store} is not writable by this user", "fix its permissions (the workers write runs there)")
    return store


def for_training(training_id: str, settings: Settings | None = None) -> RunFolder:
    """runs/{training_id}, existing or not: the id must be a valid job id and the folder resolve
    inside runs/ (an id read from Redis is input: never let it name a folder elsewhere)."""
    root = (settings or get_settings()).runs_dir
    path = root / check_job_id(training_id, "training_id")
    if path.resolve().parent != root.resolve():
        raise InvalidInput("training_id", f"{path} resolves to {path.resolve()}, outside {root}",
                           "use the id of a training run (a folder of its own under runs/)")
    return RunFolder(path)


def sweep_member(training_id: str, index: int, settings: Settings | None = None) -> RunFolder:
    """The run folder of member `index` of the sweep job `training_id`."""
    return for_training(f"{training_id}-m{index}", settings)


def sweep_of(training_id: str) -> str | None:
    """The sweep job a member's training id belongs to (None: not a member's id, by its form)."""
    match = _SWEEP_MEMBER.match(training_id)
    return match[1] if match else None


def existing(training_id: str, settings: Settings | None = None) -> RunFolder:
    """The folder of a run that exists (InvalidInput naming training_id for a malformed or unknown id)."""
    folder = for_training(training_id, settings)
    if not folder.exists():
        raise InvalidInput("training_id", f"no training run {training_id!r} under {folder.path.parent}",
                           "train an SAE first (mistudio train), or check the id with `mistudio jobs`")
    return folder


def activation_cache(data_dir: Path, dataset_id: str, hook_point: str, contexts: tuple[int, int]) -> Path:
    """Where the float32 activations at hook_point of a dataset's contexts [start, stop) are cached."""
    start, stop = contexts
    return Path(data_dir) / "activations" / dataset_id / f"{hook_point}-float32-ctx{start}-{stop}"
