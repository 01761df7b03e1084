"""`mistudio up / down / status` as Python functions (the CLI and notebooks call these)."""

from __future__ import annotations

import time

from mistudio.redis import server
from mistudio.redis.connection import check_connection, get_client, reset_pools
from mistudio.settings import Settings, get_settings


def up(settings: Settings | None = None, *, workers: bool = True) -> dict:
    """Start (or reuse) the embedded Redis and the queue workers. Idempotent; returns status()."""
    settings = settings or get_settings()
    if not settings.redis_url:
        server.start(settings)
        reset_pools()  # the server may be on a new port
    check_connection(settings)
    if workers:
        from mistudio.queue import supervisor

        supervisor.ensure_workers(settings)
    return status(settings)


def down(settings: Settings | None = None) -> dict:
    """Stop what `up` started (workers first, then Redis, with its data saved)."""
    settings = settings or get_settings()
    from mistudio.queue import supervisor

    stopped_workers = supervisor.stop_workers(settings)
    stopped_redis = False if settings.redis_url else server.stop(settings)
    reset_pools()
    return {"workers_stopped": stopped_workers, "redis_stopped": stopped_redis}


def redis_status(settings: Settings | None = None, info: dict | None = None) -> dict:
    """Version, address, memory, clients and persistence of the Redis miStudio uses
    (`info`: an INFO reply the caller already has)."""
    settings = settings or get_settings()
    endpoint = check_connection(settings)
    info = get_client("queue", settings=settings).info() if info is None else info
    state = None if settings.redis_url else server.read_state(settings)
    maxmemory = int(info.get("maxmemory", 0))
    options = dict(endpoint.options)
    return {
        "url": endpoint.url,
        "host": options.get("host"),
        "port": options.get("port"),
        "embedded": endpoint.embedded,
        "user": options.get("username") or "default",  # the ACL user miStudio connects as
        "bind": state.get("bind") if state else None,
        "pid": state["pid"] if state else None,
        "version": info.get("redis_version"),
        "address": endpoint.url.split("://", 1)[-1],
        "uptime_seconds": info.get("uptime_in_seconds"),
        "used_memory": int(info.get("used_memory", 0)),
        "used_memory_human": info.get("used_memory_human"),
        "maxmemory": maxmemory,
        "maxmemory_human": info.get("maxmemory_human"),
        "maxmemory_policy": info.get("maxmemory_policy"),
        "memory_used_fraction": (int(info.get("used_memory", 0)) / maxmemory) if maxmemory else None,
        "connected_clients": info.get("connected_clients"),
        "blocked_clients": info.get("blocked_clients"),
        "persistence": {
            "aof_enabled": bool(info.get("aof_enabled")),
            "aof_last_write_status": info.get("aof_last_write_status"),
            "rdb_last_save_time": info.get("rdb_last_save_time"),
            "rdb_changes_since_last_save": info.get("rdb_changes_since_last_save"),
            "rdb_last_bgsave_status": info.get("rdb_last_bgsave_status"),
            "loading": bool(info.get("loading")),
        },
    }


def status(settings: Settings | None = None) -> dict:
    """Everything `mistudio status --json` prints. Raises RedisUnavailable if Redis is down."""
    settings = settings or get_settings()
    result = {"time": time.time(), "home": str(settings.home), "profile": settings.profile.name}
    info = get_client("queue", settings=settings).info()  # one INFO for the status and the metrics
    result["redis"] = redis_status(settings, info)
    from mistudio.queue import supervisor

    result.update(supervisor.queue_status(settings))
    from mistudio import monitoring
    from mistudio.coord import leader

    result["metrics"], result["alerts"] = monitoring.snapshot(settings, info=info, workers=result["workers"])
    result["leader"] = leader.current(get_client("locks", settings=settings))
    return result
