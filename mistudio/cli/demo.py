"""`mistudio demo`: the headless main job behind `make demo` (see README): services, a real SAE
training on the bundled model, feature extraction and an HTML report, with progress bars in the
terminal."""

from __future__ import annotations

import time

import click

from mistudio import jobs, lifecycle
from mistudio.cli.group import cli
from mistudio.cli.progress import follow


@cli.command()
@click.option("--keep-running/--stop", default=True, help="Leave Redis and the workers running afterwards.")
def demo(keep_running: bool):
    """Start the services and run the main job end to end, printing the results."""
    run_demo(keep_running=keep_running)


def run_demo(keep_running: bool = True, train_params: dict | None = None) -> dict:
    started = time.time()
    status = lifecycle.up()
    click.echo(f"Redis {status['redis']['version']} at {status['redis']['url']} (profile {status['profile']});"
               f" workers: " + ", ".join(f"{q} pid {v['local_worker_pid']}" for q, v in status["queues"].items()))

    job = jobs.submit("train_sae", train_params or {})
    p = job.record()["params"]
    click.echo(f"1/3 training {job.id}: {p['architecture']} SAE, {p['d_in']} -> {p['d_sae']} latents (k={p.get('k')}),"
               f" {p['steps']} steps of {p['batch_size']} tokens, on {p['hook_point']} of"
               f" {p['model'] or 'all-MiniLM-L6-v2 (bundled)'} over {p['dataset'] or 'the offline stdlib corpus'}")
    record = follow(job, job.channel())
    if record["state"] != "succeeded":
        raise click.ClickException(f"training {job.id} {record['state']}: {record.get('error')}")
    training = job.result()

    click.echo(f"2/3 extracting features of {job.id} on held-out text")
    extraction = jobs.submit("extract_features", {"training_id": job.id})
    record = follow(extraction, extraction.channel(), unit="ctx")
    if record["state"] != "succeeded":
        raise click.ClickException(f"feature extraction {extraction.id} {record['state']}: {record.get('error')}")
    features = extraction.result()

    click.echo("3/3 writing the report")
    from mistudio.report import write_report  # why: the report pulls in torch and plotly; every CLI command imports this module

    report = write_report(job.id)
    final = training["final_metrics"]
    click.echo("")
    click.echo(f"SAE {job.id}: explained variance {final['explained_variance']:.3f}, L0 {final['l0']:.1f},"
               f" dead features {final['dead_fraction']:.1%}, {final['tokens_per_s']:,.0f} tokens/s")
    click.echo(f"held-out text ({features['n_tokens']:,} tokens it never trained on): explained variance"
               f" {features['explained_variance']:.3f}, L0 {features['mean_l0']:.1f}")
    click.echo(f"features: {features['total_features']} total, {features['dead_neurons']} dead on held-out text,"
               f" {features['dense_features']} dense")
    click.echo(f"SAE (SAELens layout): {training['sae_path']}")
    click.echo(f"report: {report}")
    click.echo(f"done in {time.time() - started:.0f} s. " + (
        "Redis and the workers keep running for the notebooks (`make lab`); `mistudio down` stops them."
        if keep_running else "Stopping the services."))
    if not keep_running:
        lifecycle.down()
    return {"training_id": job.id, "final_metrics": final, "features": features, "report": str(report)}
