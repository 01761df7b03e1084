"""Event types, their channels and required fields; the Event a subscriber receives."""

from __future__ import annotations

import json
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


class Malformed(ValueError):
    """A message on a channel that is not a miStudio event."""


def parse(channel: str, raw: str | bytes) -> Event:
    try:
        message = json.loads(raw)
        seq = message["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(message["type"], str):
            raise TypeError("seq must be an int and type a string")
        data = message.get("data") or {}
        if not isinstance(data, dict):
            raise TypeError("data must be an object")
        return Event(channel, message["type"], data, float(message.get("timestamp") or 0.0), seq)
    except (ValueError, KeyError, TypeError) as exc:
        raise Malformed(f"{channel}: {exc}") from None
