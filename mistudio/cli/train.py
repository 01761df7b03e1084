"""`mistudio train`: submit an SAE training job (defaults: the bundled model, the offline
corpus, a TopK SAE on the residual stream after the middle layer)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mistudio.cli.group import cli
from mistudio.cli.output import emit_json
from mistudio.errors import InvalidInput


def _read_config(path: str | None) -> dict:
    if path is None:
        return {}
    text = Path(path).read_text()
    if path.endswith(".toml"):
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise InvalidInput("--config", "TOML needs Python 3.11+", "use a .json file") from None
        return tomllib.loads(text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput("--config", f"{path} is not valid JSON ({exc})", "write a JSON object of config fields") from None
    if not isinstance(data, dict):
        raise InvalidInput("--config", f"{path} holds a {type(data).__name__}", "write a JSON object of config fields")
    return data


@cli.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="A JSON (or TOML) file of training config fields; options below override it.")
@click.option("--model", help="Hugging Face id or local folder (default: the bundled all-MiniLM-L6-v2).")
@click.option("--layer", type=int, help="Train on the residual stream after this layer (default: the middle one).")
@click.option("--hook-point", help="Any hook point instead, e.g. blocks.2.hook_mlp_out.")
@click.option("--dataset", help="Corpus: a .txt/.jsonl/.parquet file or folder, or a hub dataset id (default: stdlib text).")
@click.option("--architecture", type=click.Choice(["topk", "batchtopk", "relu", "jumprelu"]))
@click.option("--k", type=int, help="Active latents per token (topk, batchtopk).")
@click.option("--expansion-factor", type=int, help="d_sae = expansion_factor x d_in.")
@click.option("--steps", type=int, help="Training steps.")
@click.option("--tokens", "total_tokens", type=int, help="Training tokens (instead of --steps).")
@click.option("--lr", type=float, help="Learning rate.")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as one JSON object.")
@click.option("--wait", is_flag=True, help="Follow the training with a progress bar until it ends.")
def train(config_file, as_json, wait, **options):
    """Submit an SAE training job and print its id (the training id)."""
    from mistudio import jobs
    from mistudio.cli.progress import follow
    from mistudio.redis import keys

    params = _read_config(config_file)
    params.update({k: v for k, v in options.items() if v is not None})
    job = jobs.submit("train_sae", params)
    record = job.record()
    if not wait:
        if as_json:
            emit_json({"job_id": job.id, "training_id": job.id, "state": record["state"], "config": record["params"]})
        else:
            click.echo(job.id)
        return
    if not as_json:
        click.echo(f"training {job.id}: {record['params']['architecture']} SAE, d_sae {record['params']['d_sae']},"
                   f" on {record['params']['hook_point']} of {record['params']['model'] or 'all-MiniLM-L6-v2'}")
    record = follow(job, keys.training_channel(job.id))
    result = (job.stored() or {}).get("result")
    if as_json:
        emit_json({"job_id": job.id, "training_id": job.id, "state": record["state"], "result": result,
                   "error": record.get("error")})
    elif record["state"] == "succeeded":
        final = result["final_metrics"]
        click.echo(f"done: explained variance {final.get('explained_variance', float('nan')):.3f},"
                   f" L0 {final.get('l0', float('nan')):.1f}, dead {final.get('dead_fraction', float('nan')):.3f};"
                   f" SAE at {result['sae_path']}")
    else:
        raise click.ClickException(f"training {job.id} {record['state']}: {record.get('error')}")
