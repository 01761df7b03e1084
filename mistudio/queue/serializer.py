"""JSON, never pickle, for Huey's task messages.

Huey's default serializer pickles its Message tuples; anything read from a shared
Redis and unpickled can run code. This one writes plain JSON objects, so the raw
queue entry is readable with redis-cli and a non-JSON argument is refused when the
job is submitted.
"""

from __future__ import annotations

import datetime as dt
import json

from huey.registry import Message
from huey.serializer import Serializer


def _encode(value):
    if isinstance(value, Message):
        return {"__message__": {name: _encode(getattr(value, name)) for name in Message._fields}}
    if isinstance(value, dt.datetime):
        return {"__datetime__": value.isoformat()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def _decode(value):
    if isinstance(value, dict):
        if "__message__" in value and len(value) == 1:
            fields = {k: _decode(v) for k, v in value["__message__"].items() if k in Message._fields}
            if isinstance(fields.get("args"), list):
                fields["args"] = tuple(fields["args"])
            return Message(**fields)
        if "__datetime__" in value and len(value) == 1:
            return dt.datetime.fromisoformat(value["__datetime__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class JSONSerializer(Serializer):
    def _serialize(self, data) -> bytes:
        # The top-level "id" lets the claim script (Lua cjson) count attempts per job.
        encoded = _encode(data)
        if isinstance(data, Message):
            encoded = {"id": data.id, "name": data.name, **encoded}
        return json.dumps(encoded, separators=(",", ":"), allow_nan=False).encode()

    def _deserialize(self, data: bytes):
        decoded = json.loads(data)
        if isinstance(decoded, dict) and "__message__" in decoded:
            decoded = {"__message__": decoded["__message__"]}
        return _decode(decoded)
