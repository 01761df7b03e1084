"""The `mistudio` command. Each command group lives in its own module, attached to `cli`
(mistudio/cli/group.py) when the module is imported below."""

from __future__ import annotations

import sys

import click
import redis

from mistudio.cli import acl, cache, demo, features, jobs, models, services, steer, submit, train  # noqa: F401  (commands)
from mistudio.cli.group import cli
from mistudio.errors import MistudioError

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
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
