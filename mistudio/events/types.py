"""Event types, their channels and required fields; the Event a subscriber receives."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from mistudio.errors import InvalidInput
from mistudio.redis import keys

# type -> fields its data must carry
EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "training.progress": ("step", "total_steps"),
    "training.checkpoint": ("step",),
    "training.completed": (),
    "training.error": ("error",),
    "features.progress": ("done", "total"),
    "features.completed": (),
    "features.error": ("error",),
    "download.progress": (),
    "dataset.progress": (),
    "system.status": (),
    "system.alert": ("level", "message"),
}

# After one of these nothing more comes on the channel for this run.
TERMINAL_TYPES = frozenset({"training.completed", "training.error", "features.completed", "features.error"})

# The seed's channel naming convention.
CHANNELS = {
    "training": keys.training_channel,
    "features": keys.features_channel,
    "dataset": keys.dataset_download_channel,
    "model": keys.model_download_channel,
}


def channel_for(kind: str, ident: str) -> str:
    try:
        return CHANNELS[kind](ident)
    except KeyError:
        raise InvalidInput("kind", f"unknown channel kind {kind!r}", f"use one of {', '.join(CHANNELS)}") from None


def check(event_type: str, data: dict) -> None:
    if event_type not in EVENT_TYPES:
        raise InvalidInput("type", f"unknown event type {event_type!r}", f"use one of {', '.join(EVENT_TYPES)}")
    if not isinstance(data, dict):
        raise InvalidInput("data", f"must be a dict, got {type(data).__name__}", "pass the event's fields as a dict")
    missing = [f for f in EVENT_TYPES[event_type] if f not in data]
    if missing:
        raise InvalidInput("data", f"{event_type} needs {', '.join(missing)}", f"include {', '.join(missing)}")


@dataclass(frozen=True)
class Event:
    channel: str
    type: str
    data: dict
    timestamp: float
    seq: int

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def to_dict(self) -> dict:
        return {"channel": self.channel, "type": self.type, "data": self.data, "timestamp": self.timestamp, "seq": self.seq}


# Seqs are stream ids "0-{seq}" (64-bit): the publish script can give no larger one.
MAX_SEQ = 2**64 - 1


class Malformed(ValueError):
    """A message on a channel that is not a miStudio event; `reason` says why, in a few words."""

    def __init__(self, channel: str, reason: str):
        self.channel = channel
        self.reason = reason
        super().__init__(f"{channel}: {reason}")


def parse(channel: str, raw: str | bytes) -> Event:
    """The Event in one message as the publish script writes it; Malformed for anything else.

    Never raises anything but Malformed, whatever the bytes: a subscriber skips and counts."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed(channel, "not UTF-8") from None
    if not isinstance(raw, str):
        raise Malformed(channel, f"not text ({type(raw).__name__})")
    try:
        message = json.loads(raw)
    except RecursionError:
        raise Malformed(channel, "JSON nested too deeply") from None
    except ValueError:
        raise Malformed(channel, "not JSON") from None
    if not isinstance(message, dict):
        raise Malformed(channel, f"not a JSON object ({type(message).__name__})")
    missing = [name for name in ("type", "seq") if name not in message]
    if missing:
        raise Malformed(channel, f"missing {', '.join(missing)}")
    event_type, seq, data = message["type"], message["seq"], message.get("data", {})
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise Malformed(channel, "unknown type")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise Malformed(channel, "seq not an integer in [0, 2**64)")
    if not isinstance(data, dict):
        raise Malformed(channel, "data not an object")
    lacking = [name for name in EVENT_TYPES[event_type] if name not in data]
    if lacking:
        raise Malformed(channel, f"{event_type} data without {', '.join(lacking)}")
    timestamp = message.get("timestamp") or 0.0
    try:
        if isinstance(timestamp, bool) or not math.isfinite(timestamp):
            raise TypeError
    except (TypeError, OverflowError):
        raise Malformed(channel, "timestamp not a finite number") from None
    return Event(channel, event_type, data, float(timestamp), seq)
