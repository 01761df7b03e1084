"""A worker host refuses a Redis that other machines can reach without a password.

Whoever can talk to a cluster's Redis can queue jobs that run on every device's workers and read
every result. So before a worker starts (`mistudio worker`, `mistudio up`) against a Redis that
is not on loopback: a password must be configured (REDIS_PASSWORD, or in REDIS_URL), and the
server itself must refuse a client that sends none (a password we send proves nothing if the
server's default user is open to everyone). A unix socket or a loopback address is this
machine's own business and is not checked.
"""

from __future__ import annotations

import ipaddress
import socket

import redis

from mistudio.errors import InvalidInput
from mistudio.redis.connection import resolve_endpoint
from mistudio.settings import Settings, get_settings

FIX = ("give Redis a password: as its admin, add miStudio's user (`mistudio redis-acl` prints the line) and "
       "switch the default user off (`ACL SETUSER default off`), or at least set `requirepass`; then set "
       "REDIS_PASSWORD on every device (REDIS_URL=redis://mistudio@HOST:PORT)")


def is_loopback(host: str) -> bool:
    """Every address host resolves to is loopback (a name that does not resolve: not loopback)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def require_password_beyond_loopback(settings: Settings | None = None) -> None:
    """InvalidInput (naming REDIS_URL or REDIS_PASSWORD, with the fix) when this host's Redis is
    reachable from other machines without a password. Unreachable: left to check_connection."""
    settings = settings or get_settings()
    if not settings.redis_url:
        return  # the embedded server: loopback, or bound beyond it only with a password (server.py)
    endpoint = resolve_endpoint(settings)
    options = dict(endpoint.options)
    host = options.get("host")
    if "path" in options or host is None or is_loopback(host):
        return
    if not options.get("password"):
        raise InvalidInput("REDIS_PASSWORD", f"Redis at {endpoint.url} is beyond loopback and no password is set: "
                           "anyone on the network could queue jobs on this device and read every result", FIX)
    if _answers_without_password(options, settings):
        raise InvalidInput("REDIS_URL", f"Redis at {endpoint.url} answers a client that sends no password (its "
                           "default user is open): anyone on the network could queue jobs on this device", FIX)


def _answers_without_password(options: dict, settings: Settings) -> bool:
    anonymous = {k: v for k, v in options.items() if k not in ("username", "password")}
    client = redis.Redis(**anonymous, socket_connect_timeout=settings.connect_timeout,
                         socket_timeout=max(2.0, settings.connect_timeout))
    try:
        return bool(client.ping())
    except redis.exceptions.ResponseError:  # NOAUTH (AuthenticationError), or NOPERM: a password is needed
        return False
    except redis.exceptions.ConnectionError:
        return False  # unreachable: check_connection reports it with the URL and the fix
    finally:
        client.close()
