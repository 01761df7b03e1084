"""`mistudio models build-reference / reference`: the offline reference causal LM, built by a job."""

from __future__ import annotations

import click

from mistudio import jobs
from mistudio.cli.group import cli
from mistudio.cli.output import emit_json
from mistudio.cli.progress import follow
from mistudio.models.folders import REFERENCE_NAME, reference_model_path
from mistudio.models.reference_config import reference_card
from mistudio.redis import keys


@cli.group("models")
def models_group():
    """Models on this machine: the offline reference causal LM."""


@models_group.command("build-reference")
@click.option("--seed", type=int, help="Its seed (the same seed gives the same weights). [default: 0]")
@click.option("--steps", type=int, help="Training steps. [default: the profile's, 1200; ci: 120]")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]),
              help="cpu (reproducible bit for bit), cuda, or auto (a GPU where there is one). [default: cpu]")
@click.option("--rebuild", is_flag=True, help="Train it again even if it is built.")
@click.option("--wait", is_flag=True, help="Follow the training with a progress bar until it ends.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def build_reference(seed, steps, device, rebuild, wait, as_json):
    """Submit the job that trains the reference causal LM ('reference') and print its id."""
    params = {k: v for k, v in (("seed", seed), ("steps", steps), ("device", device)) if v is not None}
    job = jobs.submit("build_reference_model", {**params, "rebuild": rebuild})
    if not wait:
        if as_json:
            emit_json({"job_id": job.id, "state": job.record()["state"], "params": job.record()["params"]})
        else:
            click.echo(job.id)
        return
    record = follow(job, keys.training_channel(job.id))
    result = (job.stored() or {}).get("result")
    if as_json:
        emit_json({"job_id": job.id, "state": record["state"], "result": result, "error": record.get("error")})
    elif record["state"] == "succeeded":
        click.echo(f"{REFERENCE_NAME}: held-out loss {result['heldout_loss']:.3f} (perplexity "
                   f"{result['heldout_perplexity']:.1f}); load it with load_model('reference'); at {result['path']}")
    else:
        raise click.ClickException(f"{job.id} {record['state']}: {record.get('error')}")


@models_group.command("reference")
@click.option("--json", "as_json", is_flag=True, help="Print its card as one JSON object.")
def reference(as_json):
    """Whether the reference causal LM is built, and its card (size, held-out loss, build time)."""
    card = reference_card()
    if as_json:
        emit_json({"built": card is not None, "path": str(reference_model_path()),
                   "card": {k: v for k, v in (card or {}).items() if k != "curve"} or None})
    elif card is None:
        raise click.ClickException(f"{REFERENCE_NAME} is not built: run `mistudio models build-reference --wait`")
    else:
        click.echo(f"{REFERENCE_NAME} at {reference_model_path()}: {card['parameters']:,} parameters, "
                   f"held-out loss {card['heldout_loss']:.3f} (perplexity {card['heldout_perplexity']:.1f}), "
                   f"built in {card['seconds']:.0f} s")
