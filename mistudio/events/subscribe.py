"""Subscribing: the backlog from history, then live events, with no gap and no duplicate.

    with Subscription("training:tr_abc") as sub:        # sync
        for event in sub: ...
    async with Subscription("training:tr_abc") as sub:  # asyncio (a notebook's kernel loop)
        async for event in sub: ...

Order of work: SUBSCRIBE first, then read the history stream, then live messages;
anything with seq <= the last seen is a duplicate and dropped. If a live seq jumps,
or the connection drops (e.g. Redis restarts), the missing events are read from
history after resubscribing; while the channel is quiet the history is polled once a
second, so an event published while we were disconnected is still delivered.
Malformed messages are skipped and counted (`sub.malformed`), never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis
import redis.asyncio as aioredis

from mistudio.events.types import Event, Malformed, parse
from mistudio.redis import keys
from mistudio.redis.connection import get_client, resolve_endpoint
from mistudio.settings import Settings, get_settings

logger = logging.getLogger("mistudio.events")

CATCH_UP_INTERVAL = 1.0  # seconds of silence before the history is polled
_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class Subscription:
    def __init__(self, channels: str | list[str], *, after_seq: int | dict[str, int] = 0, history: bool = True,
                 settings: Settings | None = None):
        self.channels = [channels] if isinstance(channels, str) else list(channels)
        if isinstance(after_seq, dict):
            self.last = {c: int(after_seq.get(c, 0)) for c in self.channels}
        else:
            self.last = {c: int(after_seq) for c in self.channels}
        self.use_history = history
        self.settings = settings or get_settings()
        self.malformed = 0
        self.reconnects = 0
        self._buffer: list[Event] = []
        self._pubsub = None
        self._apubsub = None
        self._aclient = None
        self._last_catch_up = 0.0

    # --- shared bookkeeping ------------------------------------------------------------

    def _accept(self, event: Event) -> bool:
        """True if event is new for its channel (and remember it). Seq 0: an ephemeral
        event published while Redis was out of memory; delivered, not numbered."""
        if event.seq == 0:
            return True
        if event.seq <= self.last.get(event.channel, 0):
            return False
        self.last[event.channel] = event.seq
        return True

    def _parse_history(self, channel: str, entries) -> list[Event]:
        out = []
        for _, fields in entries:
            try:
                out.append(parse(channel, fields["m"] if "m" in fields else fields[b"m"]))
            except (Malformed, KeyError):
                self.malformed += 1
        return out

    def _history_range(self, channel: str) -> tuple[str, str, str]:
        last = self.last.get(channel, 0)
        return keys.event_history(channel), (f"(0-{last}" if last else "-"), "+"

    def _live(self, message) -> Event | None:
        if message is None or message.get("type") != "message":
            return None
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        try:
            return parse(channel, message["data"])
        except Malformed as exc:
            self.malformed += 1
            logger.warning("skipping a malformed message: %s", exc)
            return None

    def _wants_catch_up(self, live: Event | None) -> bool:
        """Read history before going on: a gap in seq (fill it first), or a quiet channel."""
        if live is None:
            return self.use_history and time.monotonic() - self._last_catch_up >= CATCH_UP_INTERVAL
        return self.use_history and live.seq > self.last.get(live.channel, 0) + 1

    def _push(self, event: Event | None) -> None:
        if event is not None:
            self._buffer.append(event)
            self._buffer.sort(key=lambda e: (e.channel, e.seq))

    def _take(self) -> Event | None:
        while self._buffer:
            event = self._buffer.pop(0)
            if self._accept(event):
                return event
        return None

    # --- sync ----------------------------------------------------------------------------

    def _connect(self) -> None:
        client = get_client("pubsub", settings=self.settings)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(*self.channels)
        self._pubsub = pubsub
        self._catch_up()

    def _catch_up(self) -> None:
        if not self.use_history:
            return
        client = get_client("pubsub", settings=self.settings)
        for channel in self.channels:
            self._buffer.extend(self._parse_history(channel, client.xrange(*self._history_range(channel))))
        self._buffer.sort(key=lambda e: (e.channel, e.seq))
        self._last_catch_up = time.monotonic()

    def _drop_connection(self) -> None:
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except Exception:
                pass
        self._pubsub = None

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after timeout seconds (None: wait forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = 0.1
        while True:
            event = self._take()
            if event is not None:
                return event
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            try:
                if self._pubsub is None:
                    self._connect()
                    self.reconnects += 1 if backoff > 0.1 else 0
                    backoff = 0.1
                    continue
                wait = CATCH_UP_INTERVAL if remaining is None else min(remaining, CATCH_UP_INTERVAL)
                event = self._live(self._pubsub.get_message(timeout=wait))
                if self._wants_catch_up(event):
                    self._catch_up()
                self._push(event)
            except _ERRORS as exc:
                logger.info("subscription lost (%s); reconnecting", exc)
                self._drop_connection()
                time.sleep(backoff if remaining is None else max(0.0, min(backoff, remaining)))
                backoff = min(backoff * 2, 2.0)
                self.reconnects += 1

    def __iter__(self):
        while True:
            yield self.get()

    def close(self) -> None:
        self._drop_connection()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- asyncio ---------------------------------------------------------------------------

    async def _aconnect(self) -> None:
        endpoint = resolve_endpoint(self.settings)
        options = dict(endpoint.options)
        options.pop("connection_class", None)
        self._aclient = aioredis.Redis(db=self.settings.db("pubsub"), decode_responses=True,
                                       socket_connect_timeout=self.settings.connect_timeout, **options)
        self._apubsub = self._aclient.pubsub(ignore_subscribe_messages=True)
        await self._apubsub.subscribe(*self.channels)
        await self._acatch_up()

    async def _acatch_up(self) -> None:
        if not self.use_history:
            return
        for channel in self.channels:
            self._buffer.extend(self._parse_history(channel, await self._aclient.xrange(*self._history_range(channel))))
        self._buffer.sort(key=lambda e: (e.channel, e.seq))
        self._last_catch_up = time.monotonic()

    async def _adrop(self) -> None:
        for closer in (self._apubsub, self._aclient):
            if closer is not None:
                try:
                    await closer.aclose()
                except Exception:
                    pass
        self._apubsub = self._aclient = None

    async def aget(self, timeout: float | None = None) -> Event | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = 0.1
        while True:
            event = self._take()
            if event is not None:
                return event
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            try:
                if self._apubsub is None:
                    await self._aconnect()
                    continue
                wait = CATCH_UP_INTERVAL if remaining is None else min(remaining, CATCH_UP_INTERVAL)
                event = self._live(await self._apubsub.get_message(timeout=wait))
                if self._wants_catch_up(event):
                    await self._acatch_up()
                self._push(event)
            except _ERRORS as exc:
                logger.info("subscription lost (%s); reconnecting", exc)
                await self._adrop()
                await asyncio.sleep(backoff if remaining is None else max(0.0, min(backoff, remaining)))
                backoff = min(backoff * 2, 2.0)
                self.reconnects += 1

    def __aiter__(self):
        return self

    async def __anext__(self) -> Event:
        return await self.aget()

    async def aclose(self) -> None:
        await self._adrop()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()
