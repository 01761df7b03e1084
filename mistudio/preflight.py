"""What a device checks before its workers start (`mistudio worker`, `mistudio up`), so a bad
setup is refused with the fix before anything runs: the Redis it joins is not open to the
network without a password (redis/guard.py), and its run store is there (runs.check_store)."""

from __future__ import annotations

from mistudio import runs
from mistudio.redis.guard import require_password_beyond_loopback
from mistudio.settings import Settings, get_settings


def check_worker_host(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    require_password_beyond_loopback(settings)
    runs.check_store(settings)
