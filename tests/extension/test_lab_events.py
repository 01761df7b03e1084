"""The WebSocket half: history first, then live, by seq, with no gap and no duplicate; one
Redis subscription per server process whatever the number of sockets; closed after the
run's terminal event; carried through a Redis restart."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from tornado.httpclient import HTTPClientError

from mistudio import events
from mistudio.redis.connection import get_client

API = ("mistudio", "api")


def _publisher(channel: str, steps: int, *, start: int = 0, interval: float = 0.02, end: bool = True,
               started: threading.Event | None = None) -> threading.Thread:
    """A run publishing from another thread, as a worker would: progress, then completed."""

    def run():
        for step in range(start, start + steps):
            events.publish(channel, events.TrainingProgress(step=step, total_steps=start + steps))
            if started is not None and step - start == steps // 3:
                started.set()
            time.sleep(interval)
        if end:
            events.publish(channel, events.TrainingCompleted(final_metrics={"loss": 1.0}))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def _read_all(ws, timeout: float = 30.0) -> list[dict]:
    """Every message until the server closes the socket."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        message = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
        if message is None:  # closed by the server
            return got
        got.append(json.loads(message))


async def _until(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def _numsub(channel: str) -> int:
    return dict(get_client("pubsub").pubsub_numsub(channel)).get(channel, 0)


async def test_a_socket_opened_mid_run_gets_the_whole_history_then_live_events(jp_ws_fetch, redis_db, fanout):
    channel = "training:tr_midrun"
    midway = threading.Event()
    publisher = _publisher(channel, 60, started=midway)
    await asyncio.to_thread(midway.wait, 30)
    ws = await jp_ws_fetch(*API, "events", params={"channel": channel})
    got = await _read_all(ws)
    await asyncio.to_thread(publisher.join, 30)
    seqs = [m["seq"] for m in got]
    assert seqs == list(range(1, 62)), "a gap or a duplicate"
    assert got[0]["type"] == "training.progress" and got[0]["data"]["step"] == 0
    assert got[-1]["type"] == "training.completed"  # then the server closed the socket
    assert {m["channel"] for m in got} == {channel}
    await _until(lambda: not fanout.channels, "the channel dropped once its last socket left")


async def test_after_seq_resumes_where_the_browser_left_off(jp_ws_fetch, redis_db, fanout):
    channel = "training:tr_resume"
    await asyncio.to_thread(lambda: _publisher(channel, 5, interval=0).join(10))
    ws = await jp_ws_fetch(*API, "events", params={"channel": channel, "after": "3"})
    assert [m["seq"] for m in await _read_all(ws)] == [4, 5, 6]


async def test_two_sockets_on_one_channel_share_one_redis_subscription(jp_ws_fetch, redis_db, redis_admin, fanout):
    channel = "training:tr_shared"
    first = await jp_ws_fetch(*API, "events", params={"channel": channel})
    second = await jp_ws_fetch(*API, "events", params={"channel": channel})
    await _until(lambda: fanout.listeners(channel) == 2 and _numsub(channel) == 1, "both sockets listening")
    other = await jp_ws_fetch(*API, "events", params={"channel": "features:tr_shared"})
    await _until(lambda: _numsub("features:tr_shared") == 1, "a second channel on the same connection")
    assert _numsub(channel) == 1  # still one subscriber, for three sockets on two channels
    clients = redis_admin("pubsub").client_list(_type="pubsub")
    assert len(clients) == 1 and clients[0]["sub"] == "2", clients  # one connection holds both channels

    await asyncio.to_thread(lambda: _publisher(channel, 3, interval=0.01).join(10))
    a, b = await _read_all(first), await _read_all(second)
    assert [m["seq"] for m in a] == [m["seq"] for m in b] == [1, 2, 3, 4]
    other.close()
    await _until(lambda: _numsub(channel) == 0 and _numsub("features:tr_shared") == 0,
                 "UNSUBSCRIBE once the last socket of each channel left")


async def test_a_bad_channel_is_refused_before_the_upgrade(jp_ws_fetch, redis_db, fanout):
    for params, field in (({"channel": "secrets:x"}, "channel"), ({}, "channel"),
                          ({"channel": "training:x", "after": "-1"}, "after")):
        with pytest.raises(HTTPClientError) as refused:
            await jp_ws_fetch(*API, "events", params=params)
        assert refused.value.code == 400, params
        assert json.loads(refused.value.response.body)["error"]["field"] == field
    assert fanout.channels == []


async def test_a_socket_carries_on_through_a_redis_restart(private_redis, jp_ws_fetch, fanout):
    from mistudio.redis import server
    from mistudio.redis.connection import reset_pools

    channel = "training:tr_restart"
    await asyncio.to_thread(lambda: _publisher(channel, 3, interval=0, end=False).join(10))
    ws = await jp_ws_fetch(*API, "events", params={"channel": channel})
    assert [json.loads(await ws.read_message())["seq"] for _ in range(3)] == [1, 2, 3]
    await _until(lambda: _numsub(channel) == 1, "the fan-out subscribed")

    await asyncio.to_thread(server.restart)  # SHUTDOWN SAVE, same port
    reset_pools()
    await asyncio.to_thread(lambda: _publisher(channel, 3, start=3, interval=0.05).join(20))
    rest = await _read_all(ws, timeout=30)
    assert [m["seq"] for m in rest] == [4, 5, 6, 7] and rest[-1]["type"] == "training.completed"
    assert fanout.reconnects >= 1


@pytest.mark.slow
async def test_a_real_training_followed_from_mid_run_to_its_end(jp_ws_fetch, workers, fanout):
    """A training submitted from Python (as from a terminal) on a real gpu-queue worker: a socket
    opened once it is under way gets every event its channel holds, in order, and then the end."""
    from mistudio import jobs

    await asyncio.to_thread(workers.start, "gpu")
    job = jobs.submit("train_sae", {"steps": 30, "log_every": 2})
    channel = job.channel()

    def under_way():
        return len(events.history(channel)) >= 3

    deadline = time.monotonic() + 240
    while not await asyncio.to_thread(under_way):
        assert time.monotonic() < deadline, "the training published nothing"
        await asyncio.sleep(0.2)
    ws = await jp_ws_fetch(*API, "events", params={"channel": channel})
    got = await _read_all(ws, timeout=240)
    stored = await asyncio.to_thread(events.history, channel)
    assert [m["seq"] for m in got] == [e.seq for e in stored] == list(range(1, len(stored) + 1))
    assert got[-1]["type"] == "training.completed" and len(got) > 3


async def test_a_hundred_sockets_cost_one_redis_subscriber(jp_ws_fetch, redis_db, redis_admin, fanout):
    channels = [f"training:tr_tab{i}" for i in range(5)]
    sockets = await asyncio.gather(*(jp_ws_fetch(*API, "events", params={"channel": channels[i % 5]})
                                     for i in range(100)))
    await _until(lambda: all(_numsub(c) == 1 for c in channels) and sum(map(fanout.listeners, channels)) == 100,
                 "100 sockets listening", timeout=60)
    subscribers = redis_admin("pubsub").client_list(_type="pubsub")
    assert len(subscribers) == 1 and subscribers[0]["sub"] == "5", subscribers
    for channel in channels:
        await asyncio.to_thread(lambda: _publisher(channel, 2, interval=0).join(10))
    got = await asyncio.gather(*(_read_all(ws, timeout=60) for ws in sockets))
    assert all([m["seq"] for m in messages] == [1, 2, 3] for messages in got)
    await _until(lambda: not fanout.channels, "every channel dropped once its sockets closed")


async def test_redis_away_is_a_503_that_says_what_to_do(private_redis, jp_fetch, fanout):
    from mistudio.redis import server

    await asyncio.to_thread(server.stop)
    try:
        started = time.monotonic()
        response = await jp_fetch(*API, "overview", raise_error=False)
        assert response.code == 503 and time.monotonic() - started < 10
        assert "mistudio up" in json.loads(response.body)["error"]["problem"]
    finally:
        await asyncio.to_thread(server.start)
