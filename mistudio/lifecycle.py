"""`mistudio up / down / status` as Python functions (the CLI and notebooks call these)."""

from __future__ import annotations

import contextlib
import os
import time

from mistudio import monitoring, preflight, services
from mistudio.coord import leader
from mistudio.queue import supervisor
from mistudio.queue.routes import QUEUES
from mistudio.redis import server
from mistudio.redis.connection import check_connection, get_client, reset_pools
from mistudio.settings import Settings, get_settings


def up(settings: Settings | None = None, *, workers: bool = True) -> dict:
    """Start (or reuse) the embedded Redis and the queue workers. Idempotent; returns status()."""
    settings = settings or get_settings()
    if workers:
        preflight.check_worker_host(settings)  # refused before anything starts
    if not settings.redis_url:
        server.start(settings)
        reset_pools()  # the server may be on a new port
    check_connection(settings)
    if workers:
        supervisor.ensure_workers(settings)
    return status(settings)


def down(settings: Settings | None = None) -> dict:
    """Stop what `up` started (workers first, then Redis, with its data saved)."""
    settings = settings or get_settings()

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

    result.update(supervisor.queue_status(settings))

    result["metrics"], result["alerts"] = monitoring.snapshot(settings, info=info, workers=result["workers"])
    result["leader"] = leader.current(get_client("locks", settings=settings))
    return result


@contextlib.contextmanager
def workers_with(settings: Settings | None = None, **env):
    """Run this machine's workers with extra environment for a block (a notebook demo with
    MISTUDIO_LEASE_SECONDS=4), then put back exactly the workers that ran before: same command
    line, same environment (read from the running processes), none if none ran. The caller's
    environment is restored too. A job running when the workers restart is handed back to its
    queue (SIGTERM) and runs again (a training resumes from its checkpoint)."""
    import psutil

    settings = settings or get_settings()
    before = []
    for queue in QUEUES:
        record = services.read_record(settings, supervisor.service_name(queue))
        if services.is_running(record):
            try:
                environ = psutil.Process(record.pid).environ()
            except psutil.Error:
                environ = None  # unreadable: it gets the caller's (restored) environment
            before.append((record, environ))
    saved = {name: os.environ.get(name) for name in env}
    supervisor.stop_workers(settings)
    os.environ.update({name: str(value) for name, value in env.items()})
    try:
        supervisor.ensure_workers(settings)
        yield
    finally:
        supervisor.stop_workers(settings)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for record, environ in before:
            services.start_detached(record.name, record.argv, settings, env=environ, extra=record.extra)
