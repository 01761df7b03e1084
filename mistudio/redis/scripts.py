"""Lua scripts, one `.lua` file each under mistudio/redis/lua/ (headers name KEYS and ARGV)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import redis

LUA_DIR = Path(__file__).with_name("lua")


@lru_cache(maxsize=None)
def source(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text()


def script(client: redis.Redis, name: str):
    """A callable Script bound to client. redis-py uses EVALSHA and reloads the
    script by itself after a Redis restart (NOSCRIPT)."""
    return client.register_script(source(name))
