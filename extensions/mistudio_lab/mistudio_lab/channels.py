"""Which channels a browser socket may ask for: miStudio's event channels (keys.py's families)."""

from __future__ import annotations

import re

from mistudio.errors import InvalidInput
from mistudio.events.types import CHANNELS, SYSTEM
from mistudio.redis import keys
from mistudio.validation import preview

CHANNEL_MAX = 300  # characters: an id is at most 128, a hub id's org--name a few more
_PRINTABLE = re.compile(r"[^\x00-\x20\x7f-\x9f]+")
_KINDS = tuple(f"{kind}:" for kind in CHANNELS) + (f"{SYSTEM}:",)


def check_channel(channel: str) -> str:
    """The channel, if it is one events are published on; else InvalidInput naming the fix."""
    if not channel:
        raise InvalidInput("channel", "is missing", "pass ?channel=training:ID (a job's channel, as GET jobs/ID says)")
    if len(channel) > CHANNEL_MAX or not _PRINTABLE.fullmatch(channel):
        raise InvalidInput("channel", f"{preview(channel)} is not a channel name",
                           f"pass a channel of at most {CHANNEL_MAX} printable characters, e.g. training:ID")
    family = next((p for p in keys.CHANNEL_PREFIXES if channel.startswith(p)), None)
    if family is None or not channel.startswith(_KINDS) or len(channel) == len(family):
        raise InvalidInput("channel", f"{preview(channel)} is not a miStudio event channel",
                           f"use one of {', '.join(k + 'ID' for k in _KINDS)}")
    return channel
