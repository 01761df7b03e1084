"""The API tier for the REST and socket endpoints, per authenticated user (mistudio/limits.py counts).

The windows are the API tier of mistudio/limits_config.py ("100/minute" and the burst
"10/second"); `c.MistudioLab.api_rate_limits = ["100/minute", "10/minute"]` in the server's
config replaces them (a test's override: counted under a tier name of its own, so it never
shares keys with the real tier).
"""

from __future__ import annotations

import asyncio

from mistudio import limits
from mistudio.settings import get_settings

OVERRIDE_TIER = "api-override"
SETTING = "mistudio_rate_windows"  # web_app.settings key: the windows every request counts against


def windows(texts: list[str] | None) -> list[limits.Window]:
    """The windows for a configured override (None: the production API tier)."""
    if not texts:
        return limits.tier_windows(limits.config.API_TIER)
    return [limits.Window.parse(OVERRIDE_TIER, text) for text in texts]


def rate_subject(handler) -> str:
    """Who a request counts for: its user; a request with the server's token and no login cookie
    names no user (jupyter_server makes up a new anonymous one each time), so all of those share
    the token's one budget."""
    provider = handler.identity_provider
    if handler.token_authenticated and handler.get_cookie(provider.get_cookie_name(handler)) is None:
        return "token"
    return handler.current_user.username


async def count_request(user: str, settings: dict) -> limits.Decision | None:
    """Count one request by user (a Redis round trip, off the event loop); None when
    MISTUDIO_RATE_LIMITS=off (benchmarks, bulk scripts), as for submits."""
    if not get_settings().rate_limits:
        return None
    return await asyncio.to_thread(limits.hit_api, user, windows=settings.get(SETTING))
