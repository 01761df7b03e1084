"""`mistudio features TRAINING_ID` (submit the extract_features job) and `mistudio report TRAINING_ID`."""

from __future__ import annotations

import click

from mistudio import jobs
from mistudio.cli.group import cli
from mistudio.cli.output import emit_json
from mistudio.cli.progress import follow
from mistudio.redis import keys


@cli.command()
@click.argument("training_id")
@click.option("--tokens", "n_tokens", type=int, help="Analyse only the first N held-out tokens (default: all).")
@click.option("--top-k", type=int, help="Top activating contexts kept per feature (default 20).")
@click.option("--ablation-contexts", type=int,
              help="Top contexts per feature to ablate it on, causal LMs (default 5; 0: skip the ablation effect).")
@click.option("--json", "as_json", is_flag=True, help="Print the job as one JSON object.")
@click.option("--wait", is_flag=True, help="Follow the extraction with a progress bar until it ends.")
def features(training_id: str, n_tokens: int | None, top_k: int | None, ablation_contexts: int | None, as_json: bool,
             wait: bool):
    """Submit feature extraction for a trained run and print the job id."""

    params = {"training_id": training_id, "n_tokens": n_tokens, "top_k": top_k, "ablation_contexts": ablation_contexts}
    job = jobs.submit("extract_features", {k: v for k, v in params.items() if v is not None})
    if not wait:
        if as_json:
            emit_json({"job_id": job.id, "training_id": training_id, "state": job.record()["state"]})
        else:
            click.echo(job.id)
        return
    record = follow(job, keys.features_channel(training_id), unit="context")
    result = (job.stored() or {}).get("result")
    if as_json:
        emit_json({"job_id": job.id, "training_id": training_id, "state": record["state"], "result": result,
                   "error": record.get("error")})
    elif record["state"] == "succeeded":
        held_out = (f"explained variance {result['explained_variance']:.3f} at L0 {result['mean_l0']:.1f} on them; "
                    if result.get("explained_variance") is not None else "")
        click.echo(f"done: {result['total_features']:,} features, {result['dead_neurons']:,} dead, mean frequency "
                   f"{result['avg_activation_frequency']:.3g} over {result['n_tokens']:,} tokens; "
                   f"{held_out}results in {result['results_dir']}")
    else:
        raise click.ClickException(f"feature extraction {job.id} {record['state']}: {record.get('error')}")


@cli.command()
@click.argument("training_id")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Where to write it (default runs/ID/report.html).")
def report(training_id: str, out: str | None):
    """Write a self-contained HTML report of a run (curves, dictionary, top features)."""
    from mistudio.report import write_report  # why: plotly; only `mistudio report` needs it

    click.echo(str(write_report(training_id, out)))
