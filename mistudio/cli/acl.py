"""`mistudio redis-acl`: the ACL line of miStudio's app user, for a Redis you run yourself."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import click

from mistudio.cli.group import cli
from mistudio.errors import InvalidInput
from mistudio.redis import acl
from mistudio.settings import get_settings


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        raise InvalidInput("--redis-version", f"{text!r} is not a version", "use e.g. 6.2 or 7.2") from None


def _password(settings, path: Path | None) -> tuple[str, str]:
    """(password, where it is): --password-file, else REDIS_PASSWORD, else a new one in a 0600 file."""
    if path is not None:
        return path.read_text().strip(), str(path)
    if settings.redis_password:
        return settings.redis_password, "REDIS_PASSWORD"
    target = settings.redis_dir / "external-password"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return target.read_text().strip(), str(target)


@cli.command("redis-acl")
@click.option("--redis-version", default="6.2", show_default=True, help="The version of the Redis it is for.")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read the app user's password from this file (default: REDIS_PASSWORD, else a new one).")
def redis_acl(redis_version: str, password_file: Path | None):
    """Print the ACL line of miStudio's app user (only the commands, keys and channels it uses)."""
    settings = get_settings()
    password, where = _password(settings, password_file)
    click.echo("# miStudio's app user (mistudio/redis/acl.py). Put the line in your Redis' aclfile or redis.conf, "
               "or, as an admin in redis-cli, run ACL SETUSER with the words after 'user'.")
    click.echo(f"# The password is stored as its SHA-256; it is in {where}. On every device: "
               f"REDIS_URL=redis://{acl.APP_USER}@HOST:PORT and REDIS_PASSWORD=<that password>.")
    click.echo("# Redis 6.2 ACL cannot restrict databases: the user may SELECT any; its key patterns hold in each.")
    click.echo(acl.user_line(acl.APP_USER, acl.app_rules(_version(redis_version)), password))
    click.echo("# Then close the door the default user leaves open (workers refuse a Redis beyond loopback that "
               "answers without a password), once you have an admin user of your own: ACL SETUSER default off")
