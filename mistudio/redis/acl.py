"""The Redis ACL users miStudio needs, defined once and derived from mistudio.redis.keys.

- APP_USER ("mistudio"): what workers, notebooks, the CLI and the benchmarks connect as.
  Every command except Redis' @dangerous category (FLUSHALL, FLUSHDB, CONFIG, DEBUG, MODULE,
  SHUTDOWN, KEYS, SAVE, CLIENT, ACL, MONITOR, MIGRATE...), with INFO given back (status,
  monitoring, the cache budget read it) and SCRIPT only to LOAD / check the Lua scripts (no
  SCRIPT FLUSH or KILL); only the key families of keys.KEY_PREFIXES and the channels of
  keys.CHANNEL_PREFIXES.
- ADMIN_USER ("mistudio-admin"): everything; used by lifecycle (SHUTDOWN on `mistudio down`)
  and by test fixtures that flush or CONFIG SET.
- The `default` user is switched off: every client names its user.

Limits of Redis 6.2's ACL (the bundled server): no selectors, and no way to restrict
databases, so the app user may SELECT any of the 16 (its key patterns hold in each).
Passwords are stored hashed (`#sha256`) in the generated config, never in clear.
"""

from __future__ import annotations

import hashlib

from mistudio.redis import keys

APP_USER = "mistudio"
ADMIN_USER = "mistudio-admin"


def app_commands(version: tuple[int, ...] = (6, 2)) -> list[str]:
    """The app user's command rules for a Redis version."""
    rules = ["+@all", "-@dangerous", "+info", "-script", "+script|load", "+script|exists"]
    # On connect redis-py sends CLIENT SETINFO and (RESP3) CLIENT MAINT_NOTIFICATIONS, and ignores
    # an error: allowed, they stay out of the ACL LOG. Redis 6.2 takes a rule for any subcommand
    # name; 7.x only for the subcommands it has.
    if version[:1] < (7,):
        rules += ["+client|setinfo", "+client|maint_notifications"]
    elif version[:2] >= (7, 2):
        rules.append("+client|setinfo")
    if version[:1] >= (7,):
        rules.append("-function")  # FUNCTION FLUSH/DELETE/RESTORE (7.0+) are not @dangerous
    return rules


def app_rules(version: tuple[int, ...] = (6, 2)) -> list[str]:
    """Key patterns, channel patterns and commands of the app user (no password, no on/off)."""
    return (["resetkeys", *(f"~{prefix}*" for prefix in keys.KEY_PREFIXES),
             "resetchannels", *(f"&{prefix}*" for prefix in keys.CHANNEL_PREFIXES)]
            + app_commands(version))


ADMIN_RULES = ["allkeys", "allchannels", "+@all"]
DEFAULT_RULES = ["resetchannels"]  # `reset` leaves no keys or commands (channels: per acl-pubsub-default)


def password_rule(password: str | None) -> str:
    """The ACL form of a password: its SHA-256 (never the clear text); nopass for none."""
    if not password:
        return "nopass"
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def user_line(name: str, rules: list[str], password: str | None, *, enabled: bool = True) -> str:
    """One `user ...` line for redis.conf or an aclfile (ACL SETUSER takes the same words)."""
    access = ["on", password_rule(password)] if enabled else ["off", "resetpass"]
    return " ".join(["user", name, "reset", *access, *rules])


def config_lines(app_password: str | None, admin_password: str, version: tuple[int, ...] = (6, 2)) -> list[str]:
    """The three users of the embedded server (for its generated config)."""
    return [
        user_line("default", DEFAULT_RULES, None, enabled=False),
        user_line(APP_USER, app_rules(version), app_password),
        user_line(ADMIN_USER, ADMIN_RULES, admin_password),
    ]
