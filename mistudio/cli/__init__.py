"""The `mistudio` command. Each command group lives in its own module."""

from __future__ import annotations

import sys

import click
import redis

from mistudio.errors import MistudioError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mistudio")
def cli():
    """miStudio: train and study sparse autoencoders from JupyterLab."""


def _register() -> None:
    from mistudio.cli import demo, jobs, services, train  # noqa: F401  (commands attach themselves to `cli`)
    from mistudio.cli import features  # noqa: F401  (features, report)
    from mistudio.cli import acl, cache  # noqa: F401  (redis-acl; cache stats, cache clear)


def main(argv: list[str] | None = None) -> None:
    _register()
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (MistudioError, redis.exceptions.RedisError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
