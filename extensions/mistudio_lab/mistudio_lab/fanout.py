"""One Redis subscriber per server process, fanned out to every browser socket.

The fan-out holds one `mistudio.events.Subscription` (one pub/sub connection, one command
connection) whose channel set follows the sockets: the first socket on a channel adds it
(SUBSCRIBE on the same connection), the last one to leave removes it. So a hundred tabs
watching trainings cost one Redis subscriber, and the subscription's rules (history
confirmation, dedupe, reconnect with backoff after a Redis restart, rollback detection)
are the ones every other reader of events uses; nothing here is a second subscriber loop.

Each socket is a `Listener` with its own cursor (the last seq it sent). It reads its own
backlog from the channel's history (after the seq the browser gave), then takes the shared
subscription's events: a seq at or below its cursor is a duplicate (dropped), the next one
is sent, and one that jumps ahead (the capped history trimmed, a Redis that lost data) first
reads the history in between. The first socket on a channel adds it after its own seq, so
what is published while its backlog is read still comes through the subscription. So a
socket opened mid-run gets the whole history, then live events, with no gap and no
duplicate. History reads run off the event loop; a socket closes after the run's terminal
event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Awaitable, Callable

import redis

from mistudio import events
from mistudio.events import Event
from mistudio.settings import Settings

logger = logging.getLogger("mistudio_lab")

POLL = 0.2  # seconds the shared loop waits for an event before it looks at the channel set again
_LOST = (redis.exceptions.RedisError, OSError)


class Listener:
    """One socket on one channel: backlog from history, then the shared stream, by seq."""

    def __init__(self, fanout: "Fanout", channel: str, after: int, send: Callable[[str], Awaitable[None]],
                 close: Callable[[], None]):
        self.fanout, self.channel, self.cursor = fanout, channel, after
        self._send, self._close = send, close
        self.sent = 0
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    async def run(self) -> None:
        try:
            if await self._catch_up():
                return
            while True:
                event = await self.queue.get()
                if event.seq == 0:  # ephemeral (published while Redis was full): never numbered
                    await self._emit(event)
                    continue
                if event.seq <= self.cursor:
                    continue
                if event.seq > self.cursor + 1 and await self._catch_up():
                    return
                if event.seq <= self.cursor:
                    continue  # the history read sent it
                await self._emit(event)
                if event.terminal:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket went away mid-send; nothing else to tell
            logger.debug("listener on %s ended: %s", self.channel, exc)
        finally:
            self.fanout.leave(self)
            self._close()

    async def _catch_up(self) -> bool:
        """Send the history after the cursor; True if it ends with the run's terminal event."""
        backlog = await self.fanout.read_history(self.channel, self.cursor)
        for event in backlog:
            if event.seq > self.cursor:
                await self._emit(event)
        return bool(backlog) and backlog[-1].terminal

    async def _emit(self, event: Event) -> None:
        await self._send(json.dumps(event.to_dict()))
        if event.seq:
            self.cursor = event.seq
        self.sent += 1


class Fanout:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings
        self._listeners: dict[str, set[Listener]] = {}
        self._sub: events.Subscription | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the shared loop on the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._stopping = False
            self._sub = events.Subscription((), empty_ok=True, settings=self.settings)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mistudio-fanout")

    async def stop(self) -> None:
        """End every listener and the shared loop, and close the subscription's connections."""
        self._stopping = True  # as well as cancel(): a cancel landing as redis-py's read timeout
        # fires is turned into a TimeoutError on Python < 3.12, which the subscription rides out
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                if listener.task is not None:
                    listener.task.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=5 * POLL + 5)
            self._task = None
        if self._sub is not None:
            await asyncio.wait_for(self._sub.aclose(), 5)

    def join(self, channel: str, after: int, send: Callable[[str], Awaitable[None]],
             close: Callable[[], None]) -> Listener:
        """A socket on channel wants the events after seq `after`: its listener, running."""
        self.start()
        listener = Listener(self, channel, after, send, close)
        listeners = self._listeners.setdefault(channel, set())
        if not listeners:
            # After this socket's seq, not from the channel's end: events published between the
            # listener's backlog read and the subscription's start then still come through it.
            self._sub.add(channel, after)
        listeners.add(listener)
        listener.task = asyncio.get_running_loop().create_task(listener.run(), name=f"mistudio-socket-{channel}")
        return listener

    def leave(self, listener: Listener) -> None:
        listeners = self._listeners.get(listener.channel)
        if listeners is None or listener not in listeners:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[listener.channel]
            if self._sub is not None:
                self._sub.remove(listener.channel)  # UNSUBSCRIBE: the last socket on it left

    def listeners(self, channel: str) -> int:
        return len(self._listeners.get(channel, ()))

    @property
    def channels(self) -> list[str]:
        """The channels the shared subscription listens to."""
        return [] if self._sub is None else self._sub.channels

    @property
    def reconnects(self) -> int:
        return 0 if self._sub is None else self._sub.reconnects

    async def read_history(self, channel: str, after: int) -> list[Event]:
        """The stored events after seq `after`, read off the loop; waits out a Redis outage."""
        delay = 0.1
        while True:
            try:
                return await asyncio.to_thread(events.history, channel, after, settings=self.settings)
            except _LOST as exc:
                logger.info("history of %s not readable yet (%s); retrying", channel, exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                event = await self._sub.aget(timeout=POLL)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad turn end every socket's stream
                logger.exception("the events fan-out failed; carrying on")
                await asyncio.sleep(1.0)
                continue
            if event is None:
                continue
            for listener in list(self._listeners.get(event.channel, ())):
                listener.queue.put_nowait(event)
