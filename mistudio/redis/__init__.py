"""Everything that talks to Redis directly: connections, the embedded server, key names, Lua."""

from mistudio.redis.connection import RedisAuthFailed, RedisUnavailable, check_connection, get_client, reset_pools

__all__ = ["RedisAuthFailed", "RedisUnavailable", "check_connection", "get_client", "reset_pools"]
