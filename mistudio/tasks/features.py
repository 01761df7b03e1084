"""The `extract_features` job (gpu queue, priority 7): mistudio.features.extract_features on a
finished run, with progress on `features:{training_id}` and the job record.

Results are committed under the job's fence (a lost lease writes nothing), then the run's cached
statistics are invalidated, then `features.completed` is published: a listener that reacts to it
reads the new results. A failure ends the channel with `features.error`, a stop with
`features.completed` whose `status` is "stopped", so nobody waits forever.
"""

from __future__ import annotations

import time

from mistudio.errors import InvalidInput
from mistudio.queue.tasks import task
from mistudio.redis import keys
from mistudio.tasks.reporting import Reporter

_OPTIONS = {"n_tokens": 1, "top_k": 1, "context_window": 0}


def validate_extract_features(params: dict) -> dict:
    from mistudio.feature_queries import run_dir

    unknown = set(params) - {"training_id", *_OPTIONS}
    if unknown:
        raise InvalidInput(sorted(unknown)[0], "unknown parameter", f"use training_id, {', '.join(_OPTIONS)}")
    training_id = params.get("training_id")
    folder = run_dir(training_id)  # InvalidInput naming training_id for a bad or unknown id
    if not (folder / "sae" / "sae_weights.safetensors").is_file():
        raise InvalidInput("training_id", f"run {training_id!r} has no exported SAE yet",
                           "train first: wait for its train_sae job to succeed (mistudio job ID)")
    clean = {"training_id": training_id}
    for name, low in _OPTIONS.items():
        value = params.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise InvalidInput(name, f"must be an integer >= {low}, got {value!r}", f"pass e.g. {name}=20")
        if value is not None:
            clean[name] = value
    return clean


@task("extract_features", validate=validate_extract_features, id_prefix="fx")
def extract_features(job, training_id: str, **options) -> dict:
    from mistudio import cache
    from mistudio.features import extract_features as extract
    from mistudio.settings import get_settings

    folder = get_settings().training_run_dir(training_id)
    started = time.time()
    with Reporter(job, keys.features_channel(training_id), "features.progress") as report:
        try:
            summary = extract(folder, progress=report, should_stop=job.should_stop, before_commit=job.before_commit,
                              **options)
        except Exception as exc:
            report.event("features.error", {"training_id": training_id, "error": f"{type(exc).__name__}: {exc}"})
            raise
        if summary.get("stopped"):
            report.event("features.completed", {"training_id": training_id, "status": "stopped"})
            return {"training_id": training_id, "stopped": True}
        try:
            cache.invalidate_training(training_id)  # cached stats, correlations, checkpoint list are stale now
        except Exception:
            pass
        result = {
            "training_id": training_id, "status": "succeeded", "extraction_id": summary["extraction_id"],
            "results_dir": str(folder / "features"), "duration": time.time() - started,
            **{k: summary[k] for k in ("total_features", "avg_activation_frequency", "dead_neurons",
                                       "dense_features", "n_tokens", "mean_l0")},
        }
        report.event("features.completed", result)
    return result
