"""Rate limits: sliding windows over the tiers of limits_config.py.

    from mistudio import limits
    allowed, remaining, reset_at, retry_after = limits.hit(["api"])      # the seed's 4 values
    decision = limits.check_submit("train_sae")  # raises RateLimited: what jobs.submit calls
    limits.refund(decision)                    # the request did not happen after all (submit failed)
    limits.hit_api("alice").headers()          # one HTTP API request by a user: X-RateLimit-* headers

Concurrency limits (N slots under leases) are mistudio.coord.slots.

The tiers and numbers are in mistudio/limits_config.py. A request is checked against
every window of every tier it counts against by one Lua script (trim, count, and add
only if all admit), timed by Redis' clock, with a unique member per request: a rejected
request consumes nothing and equal timestamps never merge (the seed's pipeline did both).

Why not the `limits` library's moving window (we do use its `parse`): chaining its
`hit()` over two windows (100/min and the 10/s burst) is not all-or-nothing, since a
request refused by one window has already been counted by the other (measured with
limits 5.8); `remaining`/`reset` need a second, racy round trip (`get_window_stats`);
and it stamps requests with each caller's clock, which differs between devices.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from dataclasses import dataclass
from typing import Iterable

import limits as limits_lib
import redis

from mistudio import limits_config as config
from mistudio.errors import InvalidInput, MistudioError
from mistudio.redis import keys
from mistudio.redis.connection import RedisFull, get_client, is_out_of_memory
from mistudio.redis.scripts import script
from mistudio.settings import Settings, get_settings
from mistudio.tasks import all_tasks


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True)
class Window:
    """One sliding window: at most `limit` requests in any `seconds`."""

    tier: str
    limit: int
    seconds: float

    @classmethod
    def parse(cls, tier: str, text: str) -> "Window":
        item = limits_lib.parse(text)  # "100/minute", "10/second", "5/hour", "3 per 2 seconds"
        return cls(tier, int(item.amount), float(item.get_expiry()))

    def describe(self) -> str:
        return f"{self.limit} per {_period(self.seconds)}"


def tier_windows(tier: str) -> list[Window]:
    try:
        texts = config.RATE_TIERS[tier]
    except KeyError:
        raise InvalidInput("tier", f"unknown rate tier {tier!r}", f"use one of {', '.join(config.RATE_TIERS)}") from None
    return [Window.parse(tier, text) for text in texts]


def tiers_for_task(task: str) -> list[str]:
    """The API tier, plus the task's own tier if its spec names one."""
    spec = all_tasks().get(task)
    own = spec.rate_tier if spec else None
    return [config.API_TIER] + ([own] if own else [])


@dataclass(frozen=True)
class Decision:
    """The outcome of one check. Unpacks as the seed's (allowed, remaining, reset_at, retry_after).

    remaining: requests left in the tightest window after this one; reset_at: epoch seconds
    (Redis clock) at which that window frees a slot; retry_after: seconds to wait (0 if allowed).
    limit/window/tier: the window that decided (the refusing one, else the tightest).
    member/keys: the request's entry and the windows it was counted in (for refund)."""

    allowed: bool
    remaining: int
    reset_at: float
    retry_after: float
    limit: int
    window: float
    tier: str
    member: str = ""
    keys: tuple[str, ...] = ()

    def __iter__(self):
        return iter((self.allowed, self.remaining, self.reset_at, self.retry_after))

    def headers(self) -> dict[str, str]:
        """Ready for an HTTP response (X-RateLimit-*; Retry-After when refused)."""
        out = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
               "X-RateLimit-Reset": str(math.ceil(self.reset_at))}
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return out


class RateLimited(MistudioError):
    """A rate limit refused the request; nothing was queued. Wait `retry_after` seconds."""

    def __init__(self, decision: Decision, what: str):
        self.decision = decision
        self.retry_after = decision.retry_after
        self.limit = decision.limit
        self.window = decision.window
        self.tier = decision.tier
        self.reset_at = decision.reset_at
        super().__init__(
            f"rate limit: {what} is limited to {decision.limit} per {_period(decision.window)} "
            f"({decision.tier} tier); try again in {_wait(decision.retry_after)}. "
            "Fix: wait, or change the tier in mistudio/limits_config.py"
        )

    def headers(self) -> dict[str, str]:
        return self.decision.headers()


def hit(tiers: Iterable[str] | Iterable[Window], subject: str = "global", *, client=None,
        settings: Settings | None = None) -> Decision:
    """Count one request against every window of the given tiers (names or Windows), all or nothing."""
    windows: list[Window] = []
    for tier in tiers:
        windows.extend([tier] if isinstance(tier, Window) else tier_windows(tier))
    if not windows:
        raise InvalidInput("tiers", "no rate windows given", "name at least one tier")
    client = client or get_client("ratelimit", settings=settings)
    member = uuid.uuid4().hex
    args: list = [member]
    for w in windows:
        args += [w.limit, w.seconds]
    window_keys = tuple(keys.ratelimit_window(subject, w.tier, w.seconds) for w in windows)
    try:
        out = script(client, "ratelimit_hit")(keys=list(window_keys), args=args)
    except redis.exceptions.ResponseError as exc:
        if is_out_of_memory(exc):
            raise RedisFull.measured(client, "the rate limit could not count this request; nothing was queued") from None
        raise
    allowed, now = bool(int(out[0])), float(out[1])
    views = []  # (remaining, frees_at, retry, window)
    for i, w in enumerate(windows):
        count, frees = int(out[2 + 3 * i]), out[4 + 3 * i]  # (the middle value: the oldest entry)
        frees_at = float(frees) + w.seconds if frees else now + w.seconds
        retry = max(0.0, frees_at - now) if count >= w.limit and not allowed else 0.0
        views.append((max(0, w.limit - count), frees_at, retry, w))
    if allowed:
        remaining, reset_at, retry, w = min(views, key=lambda v: v[0])
    else:
        remaining, reset_at, retry, w = max(views, key=lambda v: v[2])
        remaining = 0
    return Decision(allowed, remaining, reset_at, retry, w.limit, w.seconds, w.tier,
                    member if allowed else "", window_keys if allowed else ())


def refund(decision: Decision | None, *, client=None, settings: Settings | None = None) -> bool:
    """Give an admitted request's slot back in every window it was counted in (a submit that
    then failed, e.g. Redis full, must not use up the hour's training starts). One script of ZREMs,
    which Redis runs even at maxmemory. False if there was nothing to give back."""
    if decision is None or not decision.allowed or not decision.member:
        return False
    client = client or get_client("ratelimit", settings=settings)
    return int(script(client, "ratelimit_refund")(keys=list(decision.keys), args=[decision.member])) > 0


def user_subject(user: str) -> str:
    """The rate-limit subject of an HTTP API user: 'user:{name}' for a plain name, else a digest
    of it (a user name is input: it must not shape Redis keys)."""
    if isinstance(user, str) and _PLAIN_NAME.fullmatch(user):
        return f"user:{user}"
    return "user-sha256:" + hashlib.sha256(str(user).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def hit_api(user: str, *, windows: Iterable[Window] | None = None, settings: Settings | None = None) -> Decision:
    """Count one HTTP API request by `user` against the API tier (windows: a test's override).
    The Decision's headers() are the response's X-RateLimit-* (and Retry-After when refused)."""
    return hit(list(windows) if windows is not None else [config.API_TIER], user_subject(user), settings=settings)


def check_submit(task: str, subject: str = "global", settings: Settings | None = None) -> Decision | None:
    """What jobs.submit calls before recording a job: raises RateLimited if refused."""
    settings = settings or get_settings()
    if not settings.rate_limits:
        return None
    decision = hit(tiers_for_task(task), subject, settings=settings)
    if not decision.allowed:
        what = "submitting jobs" if decision.tier == config.API_TIER else f"{task.replace('_', ' ')} ({decision.tier})"
        raise RateLimited(decision, what)
    return decision


def _period(seconds: float) -> str:
    """60 -> 'minute', 7200 -> '2 hours', 1.5 -> '1.5 seconds'."""
    for size, unit in ((3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return unit if n == 1 else f"{n} {unit}s"
    return f"{seconds:g} seconds"


def _wait(seconds: float) -> str:
    """A retry delay for people: '0.4 s', '12 s', '4 min 5 s', '1 h 2 min'."""
    if seconds < 10:
        return f"{max(seconds, 0.1):.1f} s"
    s = math.ceil(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
