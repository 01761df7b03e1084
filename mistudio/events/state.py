"""The rules of a subscription, with no I/O: both faces of `Subscription` drive this.

A face asks `next_step()` what to do, does it, and hands the outcome to `done()`
(or the error to `lost()`); it takes events with `pop()`:

    Connect  a fresh connection, SUBSCRIBE to the channels
    Read     run `commands` (history reads) in one MULTI/EXEC; the outcome is the replies
    Listen   wait up to `seconds` for one pub/sub message; the outcome is it, or None
    Pause    sleep `seconds` (backing off after a lost connection); no outcome
    Subscribe  SUBSCRIBE `add`, UNSUBSCRIBE `remove` on the open connection (channels added or
             removed while it runs: one connection serving a changing set, as a server's fan-out)

The rules:
- Once Redis confirms a channel's SUBSCRIBE, its history is read after the last seq seen,
  then live messages: seq <= last is a duplicate (dropped), last + 1 is delivered.
- A live seq that jumps ahead is held while the history is read: what the history holds is
  delivered from it, in order; a held seq beyond the history's newest entry was not written
  by the publish script (forged or corrupt) and is skipped, so the cursor never passes real
  history. Only ids "0-{seq}" are read, so foreign stream entries are never seen either.
- A reconnect, a quiet channel (CATCH_UP_INTERVAL) and a duplicate seq whose message
  differs from the one delivered at that seq trigger a history read too. Each read checks
  that the history still holds, at the cursor, the message we saw there. If not, Redis lost
  data (a restart without its last writes, a wiped database) and its counter went back:
  the cursor moves back to the newest seq whose message is still the one we saw (else to
  the newest one published before the newest event we delivered, by timestamp), and what
  was published since under reused seqs is delivered. Nothing is delivered twice: a seq
  whose message is byte for byte the one delivered at it is a duplicate.
- Messages that are not miStudio events are skipped and counted by reason (`skipped`).
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass

from mistudio.errors import InvalidInput
from mistudio.events.types import MAX_SEQ, Event, Malformed, parse
from mistudio.redis import keys

logger = logging.getLogger("mistudio.events")

CATCH_UP_INTERVAL = 1.0  # seconds of silence on a channel before its history is read
PAGE = 1000  # history entries per read
RECENT = 1024  # messages remembered per channel (seq -> hash), to recognise a rollback
_END = f"0-{MAX_SEQ}"  # the last possible seq id: entries with other ids are not events


@dataclass(frozen=True)
class Connect:
    pass


@dataclass(frozen=True)
class Listen:
    seconds: float


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Subscribe:
    add: tuple[str, ...]
    remove: tuple[str, ...]


@dataclass(frozen=True)
class Read:
    commands: tuple[tuple, ...]
    parts: tuple[tuple[str, str, int, int], ...]  # (channel, kind, a, b), in command order


class _Channel:
    def __init__(self, name: str, last: int | None):
        self.name = name
        self.history = keys.event_history(name)
        self.last = last  # None: not placed yet (history=False: at the history's end)
        self.seen: OrderedDict[int, int] = OrderedDict()  # seq -> hash of its message, recent ones
        self.newest_timestamp: float | None = None
        self.held: list[tuple[Event, int]] = []  # live seq jumps, until the history confirms them
        self.subscribed = False
        self.read_due = True
        self.rewind: tuple[int, int] | None = None  # seqs to compare after a rollback was found
        self.heard_at = float("-inf")  # last live message or history read (monotonic)

    def remember(self, seq: int, digest: int) -> None:
        self.seen[seq] = digest
        self.seen.move_to_end(seq)
        while len(self.seen) > RECENT:
            self.seen.popitem(last=False)


def _seq(entry_id) -> int | None:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, seq = text.partition("-")
    return int(seq) if ms == "0" and seq.isdigit() else None


def _message(fields: dict):
    return fields.get(b"m", fields.get("m")) if isinstance(fields, dict) else None


def _digest(raw) -> int:
    return hash(raw.encode() if isinstance(raw, str) else bytes(raw or b""))


def _entries(reply) -> list[tuple[int, object, int]]:
    """(seq, message, its hash) of the history entries in an XRANGE reply."""
    out = []
    for entry_id, fields in reply or ():
        seq = _seq(entry_id)
        if seq is not None:
            raw = _message(fields)
            out.append((seq, raw, _digest(raw)))
    return out


def _check_seq(name: str, seq) -> None:
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise InvalidInput("after_seq", f"{name}: {seq!r} is not a seq",
                           "pass an integer >= 0 (a seq seen before), or 0 for everything")


class SubscriptionState:
    def __init__(self, channels: str | list[str], *, after_seq: int | dict[str, int] = 0, history: bool = True,
                 empty_ok: bool = False):
        names = [channels] if isinstance(channels, str) else list(channels)
        if (not names and not empty_ok) or not all(isinstance(n, str) and n for n in names):
            raise InvalidInput("channels", f"need one or more channel names, got {channels!r}",
                               "pass e.g. 'training:tr_abc' or a list of them")
        after = after_seq if isinstance(after_seq, dict) else {n: after_seq for n in names}
        unknown = sorted(set(after) - set(names))
        if unknown:
            raise InvalidInput("after_seq", f"names channels not subscribed to: {', '.join(unknown)}",
                               "give a seq only for the channels passed")
        for name, seq in after.items():
            _check_seq(name, seq)
        if not history and any(after.values()):
            raise InvalidInput("history", "history=False starts at the channel's end; after_seq says where else",
                               "pass either after_seq or history=False")
        self._channels = {n: _Channel(n, int(after.get(n, 0)) if history else None) for n in names}
        self._by_raw = {**{n.encode(): c for n, c in self._channels.items()}, **self._channels}
        self._to_subscribe: set[str] = set()  # added / removed while connected: a Subscribe step is due
        self._to_unsubscribe: set[str] = set()
        self._ready: deque[Event] = deque()
        self._connected = False
        self._lost_connection = False
        self._failures = 0
        self._retry_at = float("-inf")
        self.malformed = 0
        self.skipped: Counter[str] = Counter()  # reason -> messages skipped
        self.reconnects = 0
        self.rewinds = 0  # rollbacks found (Redis lost events we had delivered)
        self.missed = 0  # events trimmed from the capped history before we could read them

    def add(self, name: str, after_seq: int | None = 0) -> None:
        """Listen to one more channel: after after_seq, or (None) from its end when it is placed."""
        if not isinstance(name, str) or not name:
            raise InvalidInput("channel", f"need a channel name, got {name!r}", "pass e.g. 'training:tr_abc'")
        if after_seq is not None:
            _check_seq(name, after_seq)
        if name in self._channels:
            return
        channel = _Channel(name, after_seq)
        self._channels[name] = channel
        self._by_raw[name] = self._by_raw[name.encode()] = channel
        self._to_unsubscribe.discard(name)
        self._to_subscribe.add(name)

    def remove(self, name: str) -> None:
        """Stop listening to a channel (its messages still in flight are ignored)."""
        if self._channels.pop(name, None) is None:
            return
        self._by_raw.pop(name, None)
        self._by_raw.pop(name.encode(), None)
        self._to_subscribe.discard(name)
        self._to_unsubscribe.add(name)

    @property
    def channels(self) -> list[str]:
        return list(self._channels)

    @property
    def last(self) -> dict[str, int]:
        return {n: c.last or 0 for n, c in self._channels.items()}

    def pop(self) -> Event | None:
        return self._ready.popleft() if self._ready else None

    # --- what to do next ---------------------------------------------------------------

    def next_step(self, now: float, budget: float | None = None):
        """The next thing to do; budget: seconds the caller still waits (None: no limit)."""
        budget = None if budget is None else max(0.0, budget)
        if not self._connected and now < self._retry_at:
            return Pause(self._retry_at - now if budget is None else min(self._retry_at - now, budget))
        unplaced = [c for c in self._channels.values() if c.last is None]
        if unplaced:  # before subscribing: where the channel ends now is where we start
            return Read(tuple(("XREVRANGE", c.history, _END, "-", "COUNT", 1) for c in unplaced),
                        tuple((c.name, "place", 0, 0) for c in unplaced))
        if not self._connected:
            self._to_unsubscribe.clear()  # a new connection has nothing to unsubscribe from
        if not self._channels and not self._to_unsubscribe:  # nothing to listen to (yet)
            return Pause(CATCH_UP_INTERVAL if budget is None else min(CATCH_UP_INTERVAL, budget))
        if not self._connected:
            self._to_subscribe.clear()  # the connection subscribes to every channel there is
            self._to_unsubscribe.clear()
            return Connect()
        if self._to_subscribe or self._to_unsubscribe:
            return Subscribe(tuple(sorted(self._to_subscribe)), tuple(sorted(self._to_unsubscribe)))
        commands, parts = [], []
        for c in self._channels.values():
            if not c.subscribed:
                continue
            if c.rewind is not None:
                lo, hi = c.rewind
                commands.append(("XRANGE", c.history, f"0-{lo}", f"0-{hi}"))
                parts.append((c.name, "rewind", lo, hi))
            elif c.read_due or now - c.heard_at >= CATCH_UP_INTERVAL:
                commands += [("XRANGE", c.history, f"0-{c.last}" if c.last else "-", _END, "COUNT", PAGE),
                             ("XREVRANGE", c.history, _END, "-", "COUNT", 1)]
                parts.append((c.name, "catch_up", c.last, 0))
        if parts:
            return Read(tuple(commands), tuple(parts))
        quiet = [c.heard_at + CATCH_UP_INTERVAL - now for c in self._channels.values() if c.subscribed]
        seconds = max(0.0, min(quiet + [CATCH_UP_INTERVAL]))
        return Listen(seconds if budget is None else min(seconds, budget))

    def done(self, step, outcome, now: float) -> None:
        """What a step gave: Connect (nothing), Read (the replies), Listen (a message or None)."""
        if isinstance(step, Connect):
            self._connected = True
            if self._lost_connection:
                self.reconnects += 1
                self._lost_connection = False
            for c in self._channels.values():
                c.subscribed = False  # until Redis confirms; then the history is read
        elif isinstance(step, Subscribe):
            self._to_subscribe.difference_update(step.add)
            self._to_unsubscribe.difference_update(step.remove)
        elif isinstance(step, Read):
            self._failures = 0  # Redis answers again
            self._answer(step, list(outcome), now)
        elif isinstance(step, Listen) and outcome is not None:
            self._received(outcome, now)

    def lost(self, error: BaseException, now: float) -> None:
        """The connection failed (or never came): back off, then reconnect and re-read."""
        if self._connected:
            self._lost_connection = True
            logger.warning("subscription to %s lost (%s); reconnecting", ", ".join(self._channels), error)
        else:
            logger.info("subscription to %s: Redis not reachable yet (%s)", ", ".join(self._channels), error)
        self._connected = False
        self._failures += 1
        self._retry_at = now + min(0.1 * 2 ** (self._failures - 1), 2.0)

    # --- live messages -----------------------------------------------------------------

    def _received(self, message: dict, now: float) -> None:
        kind = message.get("type")
        kind = kind.decode() if isinstance(kind, bytes) else kind
        channel = self._by_raw.get(message.get("channel"))
        if channel is None:
            return
        if kind == "subscribe":
            channel.subscribed = True
            channel.read_due = True
            return
        if kind != "message":
            return
        raw = message.get("data")
        try:
            event = parse(channel.name, raw)
        except Malformed as exc:
            self._skip(exc)  # and not "heard": a stream of garbage must not put off the quiet-channel read
            return
        channel.heard_at = now
        if event.seq == 0:  # ephemeral: published while Redis was full, not numbered
            self._ready.append(event)
            return
        digest = _digest(raw)
        if event.seq <= channel.last or channel.seen.get(event.seq) == digest:
            if channel.seen.get(event.seq) != digest:
                channel.read_due = True  # not what we delivered at that seq: did Redis go back?
            return
        if event.seq == channel.last + 1 and not channel.read_due and not channel.held:
            self._deliver(channel, event, digest)
        else:
            channel.held.append((event, digest))
            channel.read_due = True

    # --- history -----------------------------------------------------------------------

    def _answer(self, read: Read, replies: list, now: float) -> None:
        at = 0
        for name, kind, a, b in read.parts:
            channel = self._channels.get(name)
            # Removed while the read ran, or removed and added again (a new channel, not yet
            # subscribed, or already placed): the replies are not its own.
            if channel is None or (channel.last is not None if kind == "place" else not channel.subscribed):
                at += 1 if kind in ("place", "rewind") else 2
                continue
            if kind == "place":
                tail = replies[at]
                channel.last = (_seq(tail[0][0]) or 0) if tail else 0
                at += 1
            elif kind == "rewind":
                self._rewound(channel, replies[at], a, b)
                at += 1
            else:
                self._caught_up(channel, a, replies[at], replies[at + 1], now)
                at += 2

    def _caught_up(self, channel: _Channel, after: int, entries, tail, now: float) -> None:
        channel.heard_at = now
        channel.read_due = False
        entries = _entries(entries)
        tail_seq = (_seq(tail[0][0]) or 0) if tail else 0
        if after:
            head = entries[0] if entries and entries[0][0] == after else None
            seen_there = channel.seen.get(after)
            if (head is None and tail_seq < after) or (head is not None and seen_there not in (None, head[2])):
                self._rollback_found(channel, after, tail_seq)
                return
            if head is None and entries:
                gap = entries[0][0] - after - 1
                self.missed += gap
                logger.warning("%s: %d events were trimmed from the capped history before they could be read",
                               channel.name, gap)
        for seq, raw, digest in entries:
            if seq <= after:
                continue
            channel.last = seq
            if channel.seen.get(seq) == digest:
                continue  # delivered before a rollback was found: the same message
            try:
                event = parse(channel.name, raw)
                if event.seq != seq:
                    raise Malformed(channel.name, "seq differs from its history id")
            except Malformed as exc:
                self._skip(exc)
                channel.remember(seq, digest)
                continue
            self._deliver(channel, event, digest)
        if len(entries) >= PAGE:
            channel.read_due = True  # more history to read
            return
        for event, _ in channel.held:
            if event.seq > channel.last:
                self._skip(Malformed(channel.name, "seq beyond the channel's history"))
        channel.held.clear()

    def _rollback_found(self, channel: _Channel, after: int, tail_seq: int) -> None:
        """The history no longer holds, at our cursor, what we saw there: find where it still does."""
        self.rewinds += 1
        channel.held.clear()
        hi = min(after, tail_seq)
        logger.warning("%s: Redis no longer holds the events we saw up to seq %d (its history ends at %d); "
                       "re-reading", channel.name, after, tail_seq)
        if hi <= 0 or not channel.seen:  # nothing left to compare, or nothing remembered
            channel.last = hi
            channel.read_due = True
            return
        lo = min(channel.seen)
        channel.rewind = (max(1, hi - RECENT + 1) if lo > hi else lo, hi)

    def _rewound(self, channel: _Channel, entries, lo: int, hi: int) -> None:
        entries = {seq: (raw, digest) for seq, raw, digest in _entries(entries)}
        anchor = max((seq for seq, (_, digest) in entries.items() if channel.seen.get(seq) == digest), default=None)
        if anchor is None:  # none of what we remember is still there: keep what is older than our newest
            anchor = max((seq for seq, (raw, _) in entries.items() if self._published_before(channel, raw)),
                         default=lo - 1)
        if anchor in entries:
            channel.remember(anchor, entries[anchor][1])  # what is there now is where we stand
        else:
            channel.seen.pop(anchor, None)
        channel.last = anchor
        channel.rewind = None
        channel.read_due = True

    @staticmethod
    def _published_before(channel: _Channel, raw) -> bool:
        """By the publishers' clocks: was this message sent no later than the newest we delivered?"""
        try:
            event = parse(channel.name, raw)
        except Malformed:
            return False
        return channel.newest_timestamp is not None and event.timestamp <= channel.newest_timestamp

    # --- bookkeeping -------------------------------------------------------------------

    def _deliver(self, channel: _Channel, event: Event, digest: int) -> None:
        channel.last = event.seq
        channel.remember(event.seq, digest)
        if channel.newest_timestamp is None or event.timestamp > channel.newest_timestamp:
            channel.newest_timestamp = event.timestamp
        self._ready.append(event)

    def _skip(self, exc: Malformed) -> None:
        self.malformed += 1
        self.skipped[exc.reason] += 1
        if self.skipped[exc.reason] == 1:  # once per reason: a flood of bad messages is not a flood of logs
            logger.warning("skipping a message that is not a miStudio event: %s", exc)
        else:
            logger.debug("skipping a message that is not a miStudio event: %s", exc)
