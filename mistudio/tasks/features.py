"""The `extract_features` job (gpu queue, priority 7): mistudio.features.extract_features on a
finished run, with progress on `features:{training_id}` and the job record.

Results are committed under the job's fence (a lost lease writes nothing), then the run's cached
statistics are invalidated, then `features.completed` is published: a listener that reacts to it
reads the new results. A failure ends the channel with `features.error`, a stop that ends the
job (cancelled, time limit) with `features.stopped`, as a training's, so nobody waits forever.
"""

from __future__ import annotations

import time

from mistudio import cache, run_location, validation
from mistudio.errors import InvalidInput
from mistudio.events import FeaturesCompleted, FeaturesError, FeaturesProgress, FeaturesStopped
from mistudio.queue.context import in_worker
from mistudio.queue.tasks import task
from mistudio.redis import keys
from mistudio.settings import get_settings
from mistudio.tasks.reporting import Reporter
from mistudio.tasks.training import FINAL_STOPS
from mistudio.validation import preview

_OPTIONS = {"n_tokens": 1, "top_k": 1, "context_window": 0, "ablation_contexts": 0}
_MAX_WINDOW = 512  # tokens either side of a top context's peak
# extract_features' defaults (mistudio/features/extract.py; not imported here: it imports torch)
_TOP_K, _WINDOW, _RESERVOIR, _ABLATION = 20, 10, 32, 5


def validate_extract_features(params: dict) -> dict:
    import json

    validation.only(params, ("training_id", *_OPTIONS), "extract_features")
    # The training id names the run's folder (runs/{training_id}): a plain name, never a path.
    training_id = validation.name(params.get("training_id"), "training_id")
    try:
        folder = run_location.locate(training_id)  # InvalidInput naming training_id for an unknown id
    except run_location.RunElsewhere:
        if in_worker():
            raise  # this device cannot see the run: the error names the device that has it
        folder = None  # submitted from a device that does not mount the run store: the worker checks the folder
    if folder is not None and not folder.exported():
        raise InvalidInput("training_id", f"run {training_id!r} has no exported SAE yet",
                           "train first: wait for its train_sae job to succeed (mistudio job ID)")
    clean = {"training_id": training_id}
    for name, low in _OPTIONS.items():
        value = params.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise InvalidInput(name, f"must be an integer >= {low}, got {preview(value)}", f"pass e.g. {name}=20")
        if value is not None:
            clean[name] = value
    ablation, top_k = clean.get("ablation_contexts", _ABLATION), clean.get("top_k", _TOP_K)
    if ablation > top_k:
        raise InvalidInput("ablation_contexts", f"{ablation} is more than the {top_k} top contexts kept per feature",
                           f"use ablation_contexts <= top_k ({top_k}), or 0 to skip the ablation effect")
    window = clean.get("context_window", _WINDOW)
    if window > _MAX_WINDOW:
        raise InvalidInput("context_window", f"{window:,} tokens either side is more than {_MAX_WINDOW}",
                           "use e.g. context_window=10")
    if folder is None:
        return clean
    try:
        d_sae = int(json.loads(folder.export_config.read_text())["d_sae"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InvalidInput("training_id", f"run {training_id!r} has a damaged SAE export (sae/cfg.json)",
                           "train it again, or retry its train_sae job") from None
    # Top contexts and the reservoir keep (top_k + reservoir) x d_sae entries of 2 * window + 1 floats.
    need = (clean.get("top_k", _TOP_K) + _RESERVOIR) * d_sae * (2 * window + 1) * 4
    budget = get_settings().memory_budget
    if need > budget:
        raise InvalidInput("top_k", f"top_k={clean.get('top_k', _TOP_K):,} with context_window={window} over {d_sae:,} "
                                    f"features keeps {need / 2**20:,.0f} MiB of examples, more than "
                                    f"MISTUDIO_MEMORY_BUDGET = {budget / 2**20:,.0f} MiB",
                           "lower top_k or context_window, or raise MISTUDIO_MEMORY_BUDGET")
    return clean


# No rate tier of its own (the API tier only): an extraction always follows a training (itself
# limited to 5/h), its size is fixed by the profile, and the GPU lock already runs it one at a time
# per device; charging it to training_starts would halve that budget.
@task("extract_features", queue="gpu", priority=7, channel=keys.features_channel, channel_param="training_id",
      events=("features.progress", "features.completed", "features.stopped", "features.error"),
      validate=validate_extract_features, id_prefix="fx",
      description="find each feature's top contexts and statistics on held-out text, "
                  "and score the SAE's reconstruction of it")
def extract_features(job, training_id: str, **options) -> dict:
    from mistudio.features import extract_features as extract  # why: torch; submit-time validation stays torch-free
    folder = run_location.locate(training_id)
    started = time.time()
    with Reporter(job, keys.features_channel(training_id), FeaturesProgress) as report:
        try:
            summary = extract(folder.path, progress=report, should_stop=job.should_stop, before_commit=job.before_commit,
                              **options)
        except Exception as exc:
            report.event(FeaturesError(training_id=training_id, error=f"{type(exc).__name__}: {exc}"))
            raise
        if summary.get("stopped"):
            if job.stop_reason in FINAL_STOPS:  # else another delivery goes on with it on this channel
                report.event(FeaturesStopped(training_id=training_id, reason=job.stop_reason))
            return {"training_id": training_id, "stopped": True}
        try:
            cache.invalidate_training(training_id)  # cached stats, correlations, checkpoint list are stale now
        except Exception:
            pass
        result = {
            "training_id": training_id, "status": "succeeded", "extraction_id": summary["extraction_id"],
            "results_dir": str(folder.features), "duration": time.time() - started,
            **{k: summary[k] for k in ("total_features", "avg_activation_frequency", "dead_neurons",
                                       "dense_features", "n_tokens", "mean_l0", "explained_variance", "fvu")},
        }
        report.event(FeaturesCompleted(**result))
    return result
