"""The `steer` job (gpu queue): mistudio.features.steering.steer on a trained run's SAE, every sampled
token streamed on `generation:{job_id}` (history as for trainings), the result in the job record.

Like a training it runs in the gpu queue's child process holding the device's GPU lock, and it holds
the "generations" concurrency slot (one at a time per device: a second one waits its turn); each
submit counts against the seed's "generations" tier (20 an hour).

validate() runs at submit and again in the worker: it reads the run's SAE config, the model's
config.json and (for strengths in units of max activation) the features' max activations from the
feature analysis, never torch, so a bad request is refused well under a second, unqueued.
"""

from __future__ import annotations

import json
import time

from mistudio import events, run_location, runs
from mistudio.errors import InvalidInput
from mistudio.events import GenerationCompleted, GenerationError, GenerationStopped, GenerationToken, Publisher
from mistudio.steering_request import check_against_model, check_request
from mistudio.models.folders import config_has_lm_head, plain_metadata, read_config, resolve_model_path
from mistudio.queue.tasks import task
from mistudio.redis import keys
from mistudio.tasks.training import FINAL_STOPS

def sae_info(folder: runs.RunFolder) -> dict:
    """The run's SAE facts from its export's cfg.json: d_sae, hook point, model."""
    training_id = folder.training_id
    if not folder.exported():
        raise InvalidInput("training_id", f"run {training_id!r} has no exported SAE yet",
                           "train first: wait for its train_sae job to succeed (mistudio job ID)")
    try:
        cfg = json.loads(folder.export_config.read_text())
        meta = cfg.get("metadata") or {}
        return {"d_sae": int(cfg["d_sae"]), "hook_point": str(meta.get("hook_name") or cfg["hook_name"]),
                "model": (meta.get("mistudio_config") or {}).get("model") or meta.get("model_name")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise InvalidInput("training_id", f"run {training_id!r} has a damaged SAE export (sae/cfg.json)",
                           "train it again, or retry its train_sae job") from None


def max_activations(folder: runs.RunFolder, indices: list[int]) -> dict[int, float] | None:
    """{feature: max activation} from the run's feature analysis (None if it has none)."""
    path = folder.features / runs.FEATURE_TABLE
    if not path.is_file():
        return None
    import pyarrow.parquet as pq  # why: 0.2 s to import, only when strengths are in max-activation units

    table = pq.read_table(path, columns=["feature", "max"], filters=[("feature", "in", list(indices))]).to_pydict()
    return dict(zip(table["feature"], table["max"]))


def _needs_max(request: dict) -> bool:
    return request["strength_unit"] == "max_activation" and request["method"] != "ablate"


def validate_steer(params: dict) -> dict:
    request = check_request(params)
    folder = run_location.locate(request["training_id"])  # InvalidInput naming training_id for an unknown run
    sae = sae_info(folder)
    name, path = resolve_model_path(sae["model"], download=False)
    config = read_config(name, path)
    metadata = {**plain_metadata(name, path, config), "has_lm_head": config_has_lm_head(config)}
    tops = max_activations(folder, [f["index"] for f in request["features"]]) if _needs_max(request) else None
    check_against_model(request, d_sae=sae["d_sae"], model_metadata=metadata, model_name=name, max_activations=tops)
    return request


def publish_failure(job_id: str, params: dict, error: str) -> None:
    """The job ended failed or dead (see queue.tasks): end the channel with generation.error."""
    events.publish(keys.generation_channel(job_id), GenerationError(error=error))


# Priority 12, above a training's 10: a steer is interactive and takes seconds, and the generations
# tier (20 an hour) keeps it from starving queued trainings.
@task("steer", queue="gpu", priority=12, rate_tier="generations", slot="generations", channel=keys.generation_channel,
      events=("generation.token", "generation.completed", "generation.stopped", "generation.error"),
      validate=validate_steer, id_prefix="gen", on_failure=publish_failure,
      description="generate default and feature-steered completions side by side, streaming tokens")
def steer(job, **request) -> dict:
    # why: torch and transformers, in the worker's child only (submit-time validation stays torch-free)
    from mistudio.features.steering import steer as generate
    from mistudio.models.loading import load_model
    from mistudio.sae.export import load_sae

    started = time.time()  # the body runs once the slot and the GPU lock are held
    training_id = request["training_id"]
    folder = run_location.locate(training_id)
    sae_cfg = sae_info(folder)
    model = load_model(sae_cfg["model"])
    sae = load_sae(folder.export, device=model.device).requires_grad_(False)
    tops = max_activations(folder, [f["index"] for f in request["features"]]) if _needs_max(request) else None
    publisher = Publisher(keys.generation_channel(job.job_id))
    sent = 0

    def on_token(token: dict) -> None:
        nonlocal sent
        publisher.emit(GenerationToken(**token))
        sent += 1

    try:  # a failure raises on: its generation.error comes from publish_failure once the job is recorded failed
        result = generate(model, sae, sae_cfg["hook_point"], request, max_activations=tops, on_token=on_token,
                          should_stop=job.should_stop)
        if result["stopped"]:
            if job.stop_reason in FINAL_STOPS:  # else another delivery goes on with it on this channel
                publisher.emit(GenerationStopped(training_id=training_id, reason=job.stop_reason, n_tokens=sent))
        else:
            publisher.emit(GenerationCompleted(training_id=training_id, method=request["method"],
                                               n_prompts=len(result["prompts"]), n_tokens=sent,
                                               duration=time.time() - started))
    finally:
        publisher.close()  # every token is sent, in order, before the terminal event
    # started/finished: when this job had the GPU
    return {"training_id": training_id, "hook_point": sae_cfg["hook_point"], **result, "started": started,
            "finished": time.time()}
