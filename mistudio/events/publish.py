"""Publishing: `publish` (one event, one round trip) and `Publisher` (throttled, off-thread).

Both take an event built through its definition (events/types.py), or a type name and data
dict checked against it (a field not defined, or of the wrong type: InvalidInput).

A Publisher never slows the training loop: `emit` only stores the event and returns;
a background thread sends it. Throttled (progress-like) types are coalesced to at most one
per `min_interval` per type (the latest wins); every other event (checkpoint, completed,
stopped, error) is sent, in the order emitted, none dropped; a terminal one only after the
pending progress, so the end is the channel's last event. If Redis is away the thread keeps
retrying: nothing is lost but coalesced progress, unless `close` gives up after its timeout
with events still unsent (then they are counted in `dropped` and logged).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque

import redis

from mistudio.events.types import TERMINAL_TYPES, THROTTLED, Event, EventData, Malformed, check, parse
from mistudio.redis import keys
from mistudio.redis.connection import get_client, is_out_of_memory
from mistudio.redis.scripts import script
from mistudio.settings import Settings, get_settings

logger = logging.getLogger("mistudio.events")

HISTORY_TTL = 7 * 86400  # seconds a channel's history lives after its last event


def _typed(event: EventData | str, data: dict | None) -> tuple[str, dict]:
    """(type, data) of a built event, or of a type name and its data (checked here)."""
    if isinstance(event, EventData):
        if data is not None:
            raise TypeError("give a built event or a type name and data, not both")
        return event.type, event.to_data()
    check(event, data)
    return event, data


def publish(channel: str, event: EventData | str, data: dict | None = None, *,
            settings: Settings | None = None) -> Event:
    """Number, store and publish one event now; returns it as subscribers will see it.

    When Redis is out of memory (noeviction refuses writes) the event cannot be stored or
    numbered; it is still PUBLISHed live, with seq 0 (ephemeral: not in the history), so
    that an alert about the full Redis still reaches whoever listens."""
    event_type, data = _typed(event, data)
    settings = settings or get_settings()
    client = get_client("pubsub", settings=settings)
    data_json = json.dumps(data, separators=(",", ":"), default=_jsonable)
    try:
        message = script(client, "event_publish")(
            keys=[keys.event_seq(channel), keys.event_history(channel), keys.event_latest(channel)],
            args=[channel, json.dumps(event_type), data_json, json.dumps(time.time()), settings.event_history,
                  HISTORY_TTL],
        )
    except redis.exceptions.ResponseError as exc:
        if not is_out_of_memory(exc):
            raise
        message = f'{{"type":{json.dumps(event_type)},"data":{data_json},"timestamp":{time.time()},"seq":0}}'
        client.publish(channel, message)
    return parse(channel, message)


def _jsonable(value):
    """numpy / torch scalars and paths in event data."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def latest(channel: str, settings: Settings | None = None) -> Event | None:
    """The channel's latest event (None if there is none, or it is not a miStudio event)."""
    raw = get_client("pubsub", decode_responses=False, settings=settings).get(keys.event_latest(channel))
    return next(_events(channel, [raw]), None) if raw else None


def history(channel: str, after_seq: int = 0, count: int | None = None, settings: Settings | None = None) -> list[Event]:
    """Stored events with seq > after_seq, oldest first (entries that are not events skipped)."""
    client = get_client("pubsub", decode_responses=False, settings=settings)
    entries = client.xrange(keys.event_history(channel), f"({'0-%d' % after_seq}" if after_seq else "-", "+", count=count)
    return list(_events(channel, (fields.get(b"m") for _, fields in entries)))


def _events(channel: str, raws):
    for raw in raws:
        try:
            yield parse(channel, raw)
        except Malformed as exc:
            logger.warning("skipping a stored message that is not a miStudio event: %s", exc)


class Publisher:
    """Throttled publishing for one channel from a background thread."""

    def __init__(self, channel: str, *, min_interval: float = 0.25, settings: Settings | None = None):
        self.channel = channel
        self.min_interval = min_interval
        self.settings = settings or get_settings()
        self._pending: dict[str, dict] = {}  # throttled type -> latest data
        self._last_sent: dict[str, float] = {}
        # Unbounded: only non-throttled events queue here (a few per run), and none may be dropped.
        self._ordered: deque[tuple[str, dict]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._busy = False
        self.sent = 0
        self.failures = 0
        self.dropped = 0  # events still unsent when close() gave up
        self._thread = threading.Thread(target=self._run, name=f"publisher-{channel}", daemon=True)
        self._thread.start()

    def emit(self, event: EventData | str, data: dict | None = None) -> None:
        """Queue an event; returns at once. Throttled types are coalesced, others always sent."""
        event_type, data = _typed(event, data)
        with self._cond:
            if event_type in THROTTLED:
                wake = event_type not in self._pending  # else the sender is already due to look
                self._pending[event_type] = data
            else:
                wake = True
                self._ordered.append((event_type, data))
            if wake:
                self._cond.notify()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything emitted so far has been sent (throttle ignored)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._last_sent.clear()  # send pending progress now
            self._cond.notify()
            while self._pending or self._ordered or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> bool:
        ok = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify()
        return ok

    def _next(self) -> tuple[str, dict] | None:
        """Under the lock: the next event due: throttled progress whose interval has passed (all of
        it before a terminal event, which must come last), else the oldest ordered event."""
        now = time.monotonic()
        for event_type, data in list(self._pending.items()):
            due = self._last_sent.get(event_type, 0.0) + self.min_interval
            if now >= due or (self._ordered and self._ordered[0][0] in TERMINAL_TYPES):
                del self._pending[event_type]
                self._last_sent[event_type] = now
                return event_type, data
        if self._ordered:
            return self._ordered.popleft()
        return None

    def _run(self) -> None:
        backoff = 0.1
        while True:
            with self._cond:
                item = self._next()
                while item is None:
                    if self._closed:
                        return
                    self._cond.wait(self.min_interval / 2 if self._pending else 1.0)
                    item = self._next()
                self._busy = True
            while True:
                try:
                    publish(self.channel, *item, settings=self.settings)
                    self.sent += 1
                    backoff = 0.1
                    break
                except Exception as exc:  # Redis away: keep the event, retry
                    self.failures += 1
                    logger.warning("publishing on %s failed (%s); retrying", self.channel, exc)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    if self._closed:  # close() gave up waiting: this one, and what is left, go unsent
                        self.dropped += 1
                        logger.error("publisher on %s closed with Redis away: %s not sent", self.channel, item[0])
                        break
            with self._cond:
                self._busy = False
                self._cond.notify_all()
