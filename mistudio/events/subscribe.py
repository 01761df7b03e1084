"""Subscribing: the backlog from history, then live events, with no gap and no duplicate.

    with Subscription("training:tr_abc") as sub:        # sync
        for event in sub: ...
    async with Subscription("training:tr_abc") as sub:  # asyncio (a notebook's kernel loop)
        async for event in sub: ...

The rules (history after the last seq, then live; dedupe by seq; catch up on a jump, a
reconnect or a quiet second; survive a Redis that lost data; skip and count what is not an
event) live in one sans-IO state machine, `events/state.py`. The two faces below only do
what it asks, on connections from `redis/connection.py` of their own (no silent retry, so
every reconnect is seen and followed by a history read). A subscription never raises for
Redis going away or for a bad message: it reconnects with backoff, and counts
(`malformed`, `skipped` by reason, `reconnects`, `rewinds`, `missed`).
"""

from __future__ import annotations

import asyncio
import time

import redis

from mistudio.events.state import CATCH_UP_INTERVAL, Connect, Listen, Pause, Read, Subscribe, SubscriptionState
from mistudio.events.types import Event
from mistudio.redis.connection import dedicated_async_client, dedicated_client
from mistudio.settings import Settings, get_settings

__all__ = ["CATCH_UP_INTERVAL", "Subscription"]

# What losing Redis looks like from redis-py: its errors (RedisUnavailable among them), socket
# errors, and ValueError("I/O operation on closed file") from a connection it closed itself.
_LOST = (redis.exceptions.RedisError, OSError, ValueError, asyncio.TimeoutError)


class Subscription:
    def __init__(self, channels: str | list[str], *, after_seq: int | dict[str, int] = 0, history: bool = True,
                 empty_ok: bool = False, settings: Settings | None = None):
        self._state = SubscriptionState(channels, after_seq=after_seq, history=history, empty_ok=empty_ok)
        self.settings = settings or get_settings()
        self._client = self._pubsub = None
        self._aclient = self._apubsub = None

    channels = property(lambda self: self._state.channels)
    last = property(lambda self: self._state.last, doc="channel -> the last seq delivered (or skipped)")
    malformed = property(lambda self: self._state.malformed, doc="messages skipped as not miStudio events")
    skipped = property(lambda self: self._state.skipped, doc="reason -> messages skipped")
    reconnects = property(lambda self: self._state.reconnects)
    rewinds = property(lambda self: self._state.rewinds, doc="times Redis was found to have lost delivered events")
    missed = property(lambda self: self._state.missed, doc="events trimmed from history before they were read")

    def add(self, channel: str, after_seq: int | None = 0) -> None:
        """Listen to one more channel on the same connection: after after_seq (None: from its end)."""
        self._state.add(channel, after_seq)

    def remove(self, channel: str) -> None:
        """Stop listening to a channel (UNSUBSCRIBE on the same connection)."""
        self._state.remove(channel)

    def _steps(self, timeout: float | None):
        """The loop both faces run, as a generator: it yields the steps to do; the face sends
        back (outcome, None) or (None, the error that lost the connection); returns the event."""
        deadline = None if timeout is None else time.monotonic() + timeout
        first = True  # one step even with timeout 0: what has arrived is read
        while (event := self._state.pop()) is None:
            now = time.monotonic()
            budget = None if deadline is None else deadline - now
            if budget is not None and budget <= 0 and not first:
                return None
            first = False
            step = self._state.next_step(now, budget)
            outcome, error = yield step
            if error is not None:
                self._state.lost(error, time.monotonic())
            else:
                self._state.done(step, outcome, time.monotonic())
        return event

    # --- sync ----------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after timeout seconds (None: wait forever; 0: what has arrived)."""
        steps = self._steps(timeout)
        try:
            step = next(steps)
            while True:
                try:
                    reply = (self._do(step), None)
                except _LOST as exc:
                    self._drop()
                    reply = (None, exc)
                step = steps.send(reply)
        except StopIteration as end:
            return end.value

    def _do(self, step):
        if isinstance(step, Pause):
            time.sleep(step.seconds)
            return None
        if isinstance(step, Connect):
            self._drop()  # a fresh client: the server may be back on another port or password
            self._pubsub = self._sync_client().pubsub()
            self._pubsub.subscribe(*self._state.channels)
            return None
        if isinstance(step, Subscribe):
            if step.add:
                self._pubsub.subscribe(*step.add)
            if step.remove:
                self._pubsub.unsubscribe(*step.remove)
            return None
        if isinstance(step, Read):
            pipe = self._sync_client().pipeline(transaction=True)
            for command in step.commands:
                pipe.execute_command(*command)
            return pipe.execute()
        assert isinstance(step, Listen)
        return self._pubsub.get_message(timeout=step.seconds)

    def _sync_client(self):
        if self._client is None:
            self._client = dedicated_client("pubsub", decode_responses=False, settings=self.settings)
        return self._client

    def _drop(self) -> None:
        for closer in (self._pubsub, self._client):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # closing what is already broken
                    pass
        self._pubsub = self._client = None

    def __iter__(self):
        while True:
            yield self.get()

    def close(self) -> None:
        self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- asyncio ---------------------------------------------------------------------------

    async def aget(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after timeout seconds (None: wait forever; 0: what has arrived)."""
        steps = self._steps(timeout)
        try:
            step = next(steps)
            while True:
                try:
                    reply = (await self._ado(step), None)
                except _LOST as exc:
                    await self._adrop()
                    reply = (None, exc)
                step = steps.send(reply)
        except StopIteration as end:
            return end.value

    async def _ado(self, step):
        if isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
            return None
        if isinstance(step, Connect):
            await self._adrop()
            self._apubsub = self._async_client().pubsub()
            await self._apubsub.subscribe(*self._state.channels)
            return None
        if isinstance(step, Subscribe):
            if step.add:
                await self._apubsub.subscribe(*step.add)
            if step.remove:
                await self._apubsub.unsubscribe(*step.remove)
            return None
        if isinstance(step, Read):
            pipe = self._async_client().pipeline(transaction=True)
            for command in step.commands:
                pipe.execute_command(*command)
            return await pipe.execute()
        assert isinstance(step, Listen)
        return await self._apubsub.get_message(timeout=step.seconds)

    def _async_client(self):
        if self._aclient is None:
            self._aclient = dedicated_async_client("pubsub", decode_responses=False, settings=self.settings)
        return self._aclient

    async def _adrop(self) -> None:
        for closer in (self._apubsub, self._aclient):
            if closer is not None:
                try:
                    await closer.aclose()
                except Exception:  # closing what is already broken
                    pass
        self._apubsub = self._aclient = None

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
