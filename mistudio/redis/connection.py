"""Redis clients: one connection pool per database, retries with backoff, clear errors.

`get_client("cache")` is how every part of miStudio talks to Redis (a subscriber, which
handles reconnects itself, takes `dedicated_client` / `dedicated_async_client`). With
`REDIS_URL` unset it connects to the embedded server that `mistudio up` started, as its app
user (mistudio.redis.acl; address and generated password read from MISTUDIO_HOME). With
`REDIS_URL`, as the URL's user (or REDIS_USERNAME), else Redis' default user with the
password. `admin_client()` (the embedded admin user) is for lifecycle and test fixtures
only. When Redis cannot be reached the error names the URL and says to run `mistudio up`,
within ~2 s: never a hang.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from mistudio.errors import MistudioError
from mistudio.redis import acl, server
from mistudio.settings import Settings, get_settings


class RedisUnavailable(MistudioError, redis.exceptions.ConnectionError):
    """Redis cannot be reached (after retries). Names the URL and how to start it."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(
            f"Cannot reach Redis at {url} ({reason}). "
            "Run `mistudio up` to start the embedded server, or point REDIS_URL at a running Redis."
        )


class RedisAuthFailed(MistudioError, redis.exceptions.AuthenticationError):
    """Redis answered but refused our credentials."""

    def __init__(self, url: str, reason: str):
        self.url = url
        super().__init__(
            f"Redis at {url} refused the password ({reason}). Set REDIS_PASSWORD (or put it in REDIS_URL) "
            "to the server's password; for the embedded server unset both and miStudio reads the generated one."
        )


class RedisFull(MistudioError):
    """Redis refused a write for memory (maxmemory reached, noeviction): nothing was stored."""

    def __init__(self, what: str, used: int | None = None, maxmemory: int | None = None):
        self.used, self.maxmemory = used, maxmemory
        usage = f" ({used / 2**20:.1f} of {maxmemory / 2**20:.1f} MiB maxmemory used)" if used and maxmemory else ""
        super().__init__(
            f"Redis is full{usage}: {what}. Fix: free memory (`mistudio cache clear`, or let old job records "
            "expire), raise maxmemory (redis.conf, or CONFIG SET maxmemory as the admin user), or point "
            "REDIS_URL at a larger Redis"
        )

    @classmethod
    def measured(cls, client: redis.Redis, what: str) -> "RedisFull":
        """With the memory figures read from INFO (left out if INFO fails too)."""
        try:
            info = client.info("memory")
            return cls(what, int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))
        except redis.exceptions.RedisError:
            return cls(what)


@dataclass(frozen=True)
class Endpoint:
    """Where Redis is: a display URL (no password, no database) and connection options."""

    url: str
    options: tuple  # sorted (name, value) pairs for redis.ConnectionPool, hashable for the pool cache
    embedded: bool


def resolve_endpoint(settings: Settings | None = None, *, admin: bool = False) -> Endpoint:
    """REDIS_URL if set, else the embedded server recorded under MISTUDIO_HOME (as its app
    user; admin=True: as its admin user, embedded server only)."""
    settings = settings or get_settings()
    if admin and settings.redis_url:
        raise MistudioError(
            f"REDIS_URL is set ({settings.redis_url.split('@')[-1]}): miStudio has no admin access to an external "
            "Redis. Fix: use that server's own administration (redis-cli as its admin user)")
    if settings.redis_url:
        try:
            options = redis.connection.parse_url(settings.redis_url)
        except ValueError as exc:
            raise MistudioError(f"REDIS_URL: {exc}. Fix: use redis://[:password@]host:port") from None
        options.pop("db", None)  # each purpose picks its own database (REDIS_DB_*)
        if settings.redis_password is not None:
            options["password"] = settings.redis_password or None
        if settings.redis_username:
            options["username"] = settings.redis_username
        host = options.get("host", "localhost")
        port = options.get("port", 6379)
        scheme = "rediss" if settings.redis_url.startswith("rediss://") else "redis"
        url = f"unix://{options['path']}" if "path" in options else f"{scheme}://{host}:{port}"
        return Endpoint(url, tuple(sorted(options.items(), key=lambda kv: kv[0])), embedded=False)

    state = server.recorded_address(settings)
    if state is None:
        raise RedisUnavailable(
            f"the embedded server (MISTUDIO_HOME={settings.home})", "it is not running and REDIS_URL is not set"
        )
    if admin:
        username, password = acl.ADMIN_USER, server.read_admin_password(settings)
    else:
        username, password = acl.APP_USER, server.read_password(settings)
    # password "" for a nopass app user (REDIS_PASSWORD=""): redis-py sends AUTH only with one.
    options = {"host": state["host"], "port": state["port"], "username": username, "password": password or ""}
    return Endpoint(f"redis://{state['host']}:{state['port']}", tuple(sorted(options.items())), embedded=True)


class Client(redis.Redis):
    """redis.Redis whose connection failures (after retries) say what to do."""

    @property
    def mistudio_url(self) -> str:
        return getattr(self.connection_pool, "mistudio_url", "redis")

    def execute_command(self, *args, **options):
        try:
            return super().execute_command(*args, **options)
        except (RedisUnavailable, RedisAuthFailed):
            raise
        except redis.exceptions.AuthenticationError as exc:
            raise RedisAuthFailed(self.mistudio_url, str(exc)) from exc
        except redis.exceptions.ConnectionError as exc:
            raise RedisUnavailable(self.mistudio_url, str(exc) or type(exc).__name__) from exc


_pools: dict[tuple, redis.ConnectionPool] = {}
_clients: dict[int, Client] = {}
_pools_lock = threading.Lock()


def command_timeout(settings: Settings) -> float:
    """Seconds a command may wait for its reply: half a lease, within 5..30 s (30 s at the default 60 s lease)."""
    return min(30.0, max(5.0, settings.lease_seconds / 2))


def _connection_kwargs(endpoint: Endpoint, db: int, decode: bool, settings: Settings) -> dict:
    """Connection options for one database: the same for every client miStudio makes."""
    options = dict(endpoint.options)
    connection_class = options.pop("connection_class", None)
    kwargs = dict(
        db=db,
        decode_responses=decode,
        socket_connect_timeout=settings.connect_timeout,
        # Long enough for Huey's 1 s blocking pops; short enough to notice a dead server, and a
        # fraction of the lease: a host cut off mid-call (its packets dropped, no error) must see its
        # lease renewal fail in time to stop its job, not after 30 s of training beside the next delivery.
        socket_timeout=command_timeout(settings),
        socket_keepalive=True,
        health_check_interval=15,
        # One retry with a short backoff: transient blips are absorbed, an absent
        # server is reported in about 2 x connect_timeout.
        retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), retries=1),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        **options,
    )
    if connection_class is not None:
        kwargs["connection_class"] = connection_class
        if issubclass(connection_class, redis.UnixDomainSocketConnection):
            kwargs.pop("socket_keepalive")  # REDIS_URL=unix://...: a TCP option the socket file refuses
    return kwargs


def _pool(endpoint: Endpoint, db: int, decode: bool, settings: Settings) -> redis.ConnectionPool:
    key = (endpoint.options, db, decode, settings.connect_timeout, command_timeout(settings))
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = redis.ConnectionPool(**_connection_kwargs(endpoint, db, decode, settings))
            pool.mistudio_url = endpoint.url
            _pools[key] = pool
        return pool


def admin_client(db: str = "queue", *, decode_responses: bool = True, settings: Settings | None = None) -> Client:
    """The embedded server's admin user (FLUSHALL, CONFIG, SHUTDOWN...): lifecycle and test fixtures only."""
    settings = settings or get_settings()
    return _client_of(_pool(resolve_endpoint(settings, admin=True), settings.db(db), decode_responses, settings))


def connection_pool(db: str = "queue", *, decode_responses: bool = True, settings: Settings | None = None):
    """The shared pool for one named database (Huey's storage takes a pool)."""
    settings = settings or get_settings()
    pool = _pool(resolve_endpoint(settings), settings.db(db), decode_responses, settings)
    return pool


def get_client(db: str = "queue", *, decode_responses: bool = True, settings: Settings | None = None) -> Client:
    """A pooled client for one of the named databases (queue, results, pubsub, ratelimit, cache, locks)."""
    settings = settings or get_settings()
    return _client_of(_pool(resolve_endpoint(settings), settings.db(db), decode_responses, settings))


def _client_of(pool: redis.ConnectionPool) -> Client:
    client = _clients.get(id(pool))
    if client is None or client.connection_pool is not pool:
        # Clients are thread-safe over their pool and costly to build: one per pool.
        client = _clients[id(pool)] = Client(connection_pool=pool)
    return client


def _without_retry(kwargs: dict, retry_class=Retry) -> dict:
    """For a long-lived reader that reconnects by itself: redis-py's silent retry would
    reconnect (and resubscribe) behind its back, so it could not tell that it must re-read."""
    kwargs = dict(kwargs)
    kwargs.pop("retry_on_error", None)
    kwargs["retry"] = retry_class(NoBackoff(), retries=0)
    return kwargs


def dedicated_client(db: str = "queue", *, decode_responses: bool = True, settings: Settings | None = None) -> Client:
    """A client on a pool of its own, without retries, for a subscriber: its connections are
    closed only by it (not by reset_pools), and every lost connection reaches it as an error."""
    settings = settings or get_settings()
    endpoint = resolve_endpoint(settings)
    pool = redis.ConnectionPool(**_without_retry(_connection_kwargs(endpoint, settings.db(db), decode_responses,
                                                                    settings)))
    pool.mistudio_url = endpoint.url
    return Client(connection_pool=pool)


def dedicated_async_client(db: str = "queue", *, decode_responses: bool = True,
                           settings: Settings | None = None):
    """The asyncio twin of dedicated_client (same URL, password, database and timeouts).
    Not pooled across callers: an asyncio connection belongs to the event loop that made it."""
    import redis.asyncio  # here: workers never need it
    from redis.asyncio.retry import Retry as AsyncRetry

    settings = settings or get_settings()
    kwargs = _without_retry(_connection_kwargs(resolve_endpoint(settings), settings.db(db), decode_responses, settings),
                            AsyncRetry)
    if "connection_class" in kwargs:  # TLS or a unix socket: the asyncio class of the same name
        kwargs["connection_class"] = getattr(redis.asyncio.connection, kwargs["connection_class"].__name__)
    return redis.asyncio.Redis(connection_pool=redis.asyncio.ConnectionPool(**kwargs))


def is_out_of_memory(exc: BaseException) -> bool:
    """Redis refused a write because maxmemory is reached (noeviction): plain commands raise
    OutOfMemoryError; inside a Lua script the error text carries the OOM code."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis.exceptions.ResponseError) and ("OOM" in str(exc) or "maxmemory" in str(exc))
    )


def check_connection(settings: Settings | None = None) -> Endpoint:
    """Ping Redis once; raise RedisUnavailable / RedisAuthFailed with a clear message."""
    settings = settings or get_settings()
    endpoint = resolve_endpoint(settings)
    get_client("queue", settings=settings).ping()
    return endpoint


def reset_pools() -> None:
    """Drop every pooled connection (after a server restart on a new port, or in tests)."""
    with _pools_lock:
        for pool in _pools.values():
            pool.disconnect()
        _pools.clear()
        _clients.clear()
