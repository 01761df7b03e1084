"""The `mistudio` click group: every command module attaches its commands to it."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mistudio")
def cli():
    """miStudio: train and study sparse autoencoders from JupyterLab."""
