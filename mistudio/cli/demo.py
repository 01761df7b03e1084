"""`mistudio demo`: the headless main job (see README)."""

from __future__ import annotations

import click

from mistudio.cli import cli


@cli.command()
@click.option("--keep-running/--stop", default=True, help="Leave Redis and the workers running afterwards.")
def demo(keep_running: bool):
    """Start the services and run the main job end to end, printing the results."""
    from mistudio.demo import run_demo

    run_demo(keep_running=keep_running)
