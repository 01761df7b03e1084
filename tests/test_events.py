"""Events: publish/receive on the seed's channels, history for late joiners, reconnects."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time

import pytest

from mistudio import events
from mistudio.errors import InvalidInput
from mistudio.redis import keys

pytestmark = pytest.mark.timeout(120)


def test_message_shape_and_per_channel_seq(redis_db):
    a1 = events.publish("training:tr_a", "training.progress", {"step": 1, "total_steps": 10, "loss": 0.5})
    a2 = events.publish("training:tr_a", "training.progress", {"step": 2, "total_steps": 10, "loss": 0.25})
    b1 = events.publish("features:tr_a", "features.progress", {"done": 1, "total": 4})
    assert (a1.seq, a2.seq, b1.seq) == (1, 2, 1)
    raw = json.loads(redis_db("pubsub").get(keys.event_latest("training:tr_a")))
    assert set(raw) == {"type", "data", "timestamp", "seq"}
    assert raw["type"] == "training.progress" and raw["data"]["loss"] == 0.25 and raw["seq"] == 2
    assert abs(raw["timestamp"] - time.time()) < 5


def test_unknown_types_and_missing_fields_are_refused(redis_db):
    with pytest.raises(InvalidInput, match="unknown event type"):
        events.publish("training:x", "training.exploded", {})
    with pytest.raises(InvalidInput, match="total_steps"):
        events.publish("training:x", "training.progress", {"step": 1})


def test_publish_to_receive_latency(redis_db):
    channel = "training:tr_latency"
    with events.Subscription(channel) as sub:
        sub.get(timeout=0.2)  # connected and subscribed
        latencies = []
        for i in range(200):
            sent = time.perf_counter()
            events.publish(channel, "training.progress", {"step": i, "total_steps": 200})
            event = sub.get(timeout=5)
            latencies.append(time.perf_counter() - sent)
            assert event.seq == i + 1
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * len(latencies))]
    print(f"publish->receive p50 {1000 * p50:.3f} ms p99 {1000 * p99:.3f} ms")
    assert p50 < 0.05  # generous: a shared 2-core machine; the benchmark has the real figure


def test_a_late_subscriber_gets_the_backlog_then_live_events_in_order(redis_db):
    channel = "training:tr_late"
    for i in range(1000):
        events.publish(channel, "training.progress", {"step": i, "total_steps": 1100})
    received = []
    with events.Subscription(channel) as sub:

        def more():
            for i in range(1000, 1100):
                events.publish(channel, "training.progress", {"step": i, "total_steps": 1100})
                if i % 10 == 0:
                    time.sleep(0.005)

        publisher = threading.Thread(target=more)
        publisher.start()
        while len(received) < 1100:
            event = sub.get(timeout=10)
            assert event is not None, f"stalled after {len(received)} events"
            received.append(event)
        publisher.join()
        assert sub.get(timeout=0.3) is None  # nothing twice
    assert [e.seq for e in received] == list(range(1, 1101))
    assert [e.data["step"] for e in received] == list(range(1100))


def test_resume_after_a_given_seq(redis_db):
    channel = "training:tr_resume"
    for i in range(10):
        events.publish(channel, "training.progress", {"step": i, "total_steps": 10})
    with events.Subscription(channel, after_seq=7) as sub:
        assert [sub.get(timeout=2).seq for _ in range(3)] == [8, 9, 10]


def test_malformed_messages_are_skipped_and_counted(redis_db):
    channel = "training:tr_bad"
    with events.Subscription(channel) as sub:
        sub.get(timeout=0.2)
        redis_db("pubsub").publish(channel, "not json at all")
        redis_db("pubsub").publish(channel, json.dumps({"type": "training.progress", "seq": "one"}))
        events.publish(channel, "training.completed", {"final_loss": 0.1})
        event = sub.get(timeout=5)
        assert event.type == "training.completed" and event.terminal
        assert sub.malformed == 2


def test_a_redis_restart_mid_stream_loses_nothing(tmp_path, monkeypatch):
    """Its own server: restarted while a subscriber listens; every event after the restart arrives."""
    from mistudio.redis import server
    from mistudio.redis.connection import reset_pools

    monkeypatch.setenv("MISTUDIO_HOME", str(tmp_path / "home"))
    reset_pools()
    server.start()
    channel = "training:tr_restart"
    try:
        for i in range(5):
            events.publish(channel, "training.progress", {"step": i, "total_steps": 20})
        sub = events.Subscription(channel)
        assert [sub.get(timeout=5).seq for _ in range(5)] == [1, 2, 3, 4, 5]
        server.restart()  # SHUTDOWN SAVE; same port
        reset_pools()
        for i in range(5, 20):
            events.publish(channel, "training.progress", {"step": i, "total_steps": 20})
        got = [sub.get(timeout=15) for _ in range(15)]
        assert None not in got, "stalled after the restart"
        assert [e.seq for e in got] == list(range(6, 21))
        assert sub.get(timeout=1.5) is None
        sub.close()
    finally:
        server.stop()
        reset_pools()


def test_async_subscription(redis_db):
    channel = "features:tr_async"
    events.publish(channel, "features.progress", {"done": 1, "total": 3})

    async def main():
        async with events.Subscription(channel) as sub:
            first = await sub.aget(timeout=5)
            events.publish(channel, "features.progress", {"done": 2, "total": 3})
            events.publish(channel, "features.completed", {"n_features": 3})
            rest = [await sub.aget(timeout=5), await sub.aget(timeout=5)]
            return [first] + rest

    got = asyncio.run(main())
    assert [e.seq for e in got] == [1, 2, 3] and got[-1].terminal


def test_publisher_coalesces_progress_and_always_sends_the_end(redis_db):
    channel = "training:tr_throttle"
    pub = events.Publisher(channel, min_interval=0.2)
    started = time.perf_counter()
    for step in range(5000):
        pub.emit("training.progress", {"step": step, "total_steps": 5000})
    pub.emit("training.checkpoint", {"step": 4999, "path": "/tmp/ckpt"})
    pub.emit("training.completed", {"final_loss": 0.01})
    emit_cost = (time.perf_counter() - started) / 5002
    assert pub.close(timeout=10)
    assert emit_cost < 1e-4  # emit never waits for Redis
    stored = events.history(channel)
    progress = [e for e in stored if e.type == "training.progress"]
    assert 1 <= len(progress) < 100  # coalesced, not 5000
    assert progress[-1].data["step"] == 4999  # the latest progress is never dropped
    assert [e.type for e in stored[-2:]] == ["training.checkpoint", "training.completed"]
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))


def test_history_is_capped(redis_db, monkeypatch):
    monkeypatch.setenv("MISTUDIO_EVENT_HISTORY", "100")
    channel = "dataset:ds1:download"
    for i in range(1000):
        events.publish(channel, "dataset.progress", {"i": i})
    length = redis_db("pubsub").xlen(keys.event_history(channel))
    assert 100 <= length < 400  # MAXLEN ~ trims in whole nodes
    assert events.latest(channel).data == {"i": 999}
