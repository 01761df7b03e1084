"""Events: publish/receive on the seed's channels, history for late joiners, reconnects."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import threading
import time
from collections import Counter

import pytest

from helpers import wait_for
from mistudio import events
from mistudio.errors import InvalidInput
from mistudio.redis import keys

pytestmark = pytest.mark.timeout(120)


class _Face:
    """One Subscription used through its sync face, or through its asyncio face on an event
    loop in a thread of its own (as a notebook kernel's), with the same calls."""

    def __init__(self, kind: str, *args, **kwargs):
        self.sub = events.Subscription(*args, **kwargs)
        self.loop = None
        if kind == "asyncio":
            self.loop = asyncio.new_event_loop()
            self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
            self.thread.start()

    def get(self, timeout: float):
        if self.loop is None:
            return self.sub.get(timeout=timeout)
        return asyncio.run_coroutine_threadsafe(self.sub.aget(timeout=timeout), self.loop).result(timeout + 60)

    def __getattr__(self, name):
        return getattr(self.sub, name)

    def close(self) -> None:
        if self.loop is None:
            self.sub.close()
            return
        asyncio.run_coroutine_threadsafe(self.sub.aclose(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(params=["sync", "asyncio"])
def face(request):
    """face(channels, **options): a Subscription driven through one face (both, by parametrize)."""
    opened = []

    def open_(*args, **kwargs) -> _Face:
        opened.append(_Face(request.param, *args, **kwargs))
        return opened[-1]

    yield open_
    for sub in opened:
        sub.close()


def _kill_and_start(state: dict, outage: float) -> dict:
    """SIGKILL the server (no save: what was not yet on disk is lost), wait, start it again."""
    from mistudio.redis import server
    from mistudio.redis.connection import reset_pools

    os.kill(state["pid"], signal.SIGKILL)
    wait_for(lambda: server.read_state() is None, message="redis gone")
    time.sleep(outage)
    state = server.start()
    reset_pools()
    return state


def _progress(channel: str, steps) -> None:
    for step in steps:
        events.publish(channel, events.TrainingProgress(step=step, total_steps=100))


def _forged(seq: int) -> str:
    """A well-formed event that the publish script never wrote: its seq is made up."""
    return json.dumps({"type": "training.progress", "data": {"step": -1, "total_steps": 100},
                       "timestamp": time.time(), "seq": seq})


# Raw messages that are not miStudio events, by the reason a subscriber gives for skipping them.
BAD_MESSAGES = {
    "not UTF-8": b'{"type": "training.completed", "seq": 7, "data": {"x": "\xff\xfe\x80"}}',
    "JSON nested too deeply": "[" * 100_000 + "]" * 100_000,
    "not JSON": "not json at all",
    "not a JSON object (list)": "[1, 2, 3]",
    "not a JSON object (int)": "42",
    "not a JSON object (NoneType)": "null",
    "missing seq": json.dumps({"type": "training.progress", "data": {"step": 1, "total_steps": 2}}),
    "missing type": json.dumps({"seq": 3, "data": {}}),
    "unknown type": json.dumps({"type": "training.exploded", "seq": 3, "data": {}}),
    "training.progress data without step": json.dumps({"type": "training.progress", "seq": 3,
                                                       "data": {"total_steps": 2}}),
    "data not an object": json.dumps({"type": "training.completed", "seq": 3, "data": [1, 2]}),
    "seq not an integer in [0, 2**64)": _forged(2**70),
    "timestamp not a finite number": json.dumps({"type": "training.completed", "seq": 3, "timestamp": "soon"}),
    "seq beyond the channel's history": _forged(10**12),
}


def test_message_shape_and_per_channel_seq(redis_db):
    a1 = events.publish("training:tr_a", events.TrainingProgress(step=1, total_steps=10, metrics={"loss": 0.5}))
    a2 = events.publish("training:tr_a", events.TrainingProgress(step=2, total_steps=10, metrics={"loss": 0.25}))
    b1 = events.publish("features:tr_a", events.FeaturesProgress(done=1, total=4))
    assert (a1.seq, a2.seq, b1.seq) == (1, 2, 1)
    raw = json.loads(redis_db("pubsub").get(keys.event_latest("training:tr_a")))
    assert set(raw) == {"type", "data", "timestamp", "seq"}
    assert raw["type"] == "training.progress" and raw["data"]["metrics"]["loss"] == 0.25 and raw["seq"] == 2
    assert abs(raw["timestamp"] - time.time()) < 5


def test_unknown_types_and_missing_fields_are_refused(redis_db):
    with pytest.raises(InvalidInput, match="unknown event type"):
        events.publish("training:x", "training.exploded", {})
    with pytest.raises(InvalidInput, match="total_steps"):
        events.publish("training:x", "training.progress", {"step": 1})
    with pytest.raises(TypeError, match="total_steps"):
        events.TrainingProgress(step=1)


# One full example per event type, built through its definition: a type added to events/types.py
# without one here fails test_every_event_type_has_an_example.
EXAMPLES = [
    events.TrainingProgress(step=5, total_steps=10, progress=50.0, metrics={"loss": 0.5, "l0": 32.0},
                            estimated_remaining_seconds=12.5),
    events.TrainingProgress(step=0, total_steps=10, phase="caching activations", phase_done=250.0, phase_total=1000.0,
                            phase_unit="tokens", phase_rate=50.0, phase_remaining_seconds=15.0),
    events.TrainingCheckpoint(step=5, path="/runs/tr_x/checkpoints/step_5"),
    events.TrainingCompleted(step=10, final_metrics={"explained_variance": 0.9}, sae_path="/runs/tr_x/sae", duration=3.5),
    events.TrainingStopped(step=5, reason="cancelled"),
    events.TrainingError(error="RuntimeError: boom"),
    events.FeaturesProgress(done=3, total=8, phase="extracting", tokens=384),
    events.FeaturesCompleted(training_id="tr_x", extraction_id="ex1", results_dir="/runs/tr_x/features", duration=2.0,
                             total_features=64, avg_activation_frequency=0.01, dead_neurons=3, dense_features=0,
                             n_tokens=4096, mean_l0=12.5),
    events.FeaturesStopped(training_id="tr_x", reason="time_limit"),
    events.FeaturesError(error="InvalidInput: no", training_id="tr_x"),
    events.GenerationToken(prompt_index=0, branch="default", position=0, token=" the", token_id=262, logprob=-1.25),
    events.GenerationToken(prompt_index=1, branch="steered", steered_index=2, position=7, token="\n", token_id=198,
                           logprob=-0.5),
    events.GenerationCompleted(training_id="tr_x", method="additive", n_prompts=2, n_tokens=64, duration=1.5),
    events.GenerationStopped(training_id="tr_x", reason="cancelled", n_tokens=10),
    events.GenerationError(error="InvalidInput: no"),
    events.DownloadProgress(downloaded_bytes=5, total_bytes=20, files_done=0, files_total=3, repo_id="org/m"),
    events.DownloadProgress(model_id="org/m", done=True, path="/models/org--m"),
    events.DatasetProgress(stage="tokenize", tokens_done=100, tokens_total=400, documents=7),
    events.DatasetProgress(dataset_id="ds1", done=True, stats={"total_tokens": 400}),
    events.SystemStatus(leader="node1", term=2, queues={"gpu": {"queued": 0}}, workers=[{"worker_id": "w1"}],
                        metrics={"memory_usage": 0.1}, alerts=[]),
    events.SystemAlert(level="critical", message="memory at 95%", name="memory_usage", value=0.95, warning=0.7,
                       critical=0.9),
]


def _channel_of(value: events.EventData) -> str:
    kind = value.channels[0]
    if kind == "system":
        return keys.SYSTEM_ALERTS_CHANNEL if value.type == "system.alert" else keys.SYSTEM_STATUS_CHANNEL
    return events.channel_for(kind, "rt1")


def test_every_event_type_has_an_example():
    assert {value.type for value in EXAMPLES} == set(events.EVENT_TYPES)
    assert events.TERMINAL_TYPES == {"training.completed", "training.stopped", "training.error", "features.completed",
                                     "features.stopped", "features.error", "generation.completed",
                                     "generation.stopped", "generation.error"}
    for name, definition in events.EVENT_TYPES.items():
        assert definition.type == name and all(kind in events.CHANNELS or kind == "system"
                                               for kind in definition.channels)


@pytest.mark.parametrize("value", EXAMPLES, ids=lambda v: v.type)
def test_every_event_type_round_trips_through_its_definition(redis_db, value):
    """build -> publish (JSON through the publish script) -> history and a live subscriber -> the same typed value."""
    channel = _channel_of(value)
    sent = events.publish(channel, value)
    with events.Subscription(channel) as sub:  # a late joiner: the backlog, then live
        received = wait_for(lambda: sub.get(timeout=1), timeout=30, message="the event")
    (stored,) = [e for e in events.history(channel) if e.seq == sent.seq]
    raw = json.loads(redis_db("pubsub").get(keys.event_latest(channel)))
    assert raw["type"] == value.type and raw["data"] == json.loads(json.dumps(value.to_data()))
    for got in (sent, stored, received):
        assert got.type == value.type and got.payload == value and got.terminal == value.terminal


def test_a_field_not_in_a_definition_or_of_the_wrong_type_is_refused_at_build_time(redis_db):
    with pytest.raises(TypeError, match="loss"):
        events.TrainingProgress(step=1, total_steps=2, loss=0.5)
    with pytest.raises(InvalidInput, match="training.progress has no field loss") as refused:
        events.publish("training:x", "training.progress", {"step": 1, "total_steps": 2, "loss": 0.5})
    assert refused.value.field == "data" and "metrics" in refused.value.fix
    with pytest.raises(InvalidInput, match="step must be int") as refused:
        events.TrainingProgress(step="1", total_steps=2)
    assert refused.value.field == "data.step"
    with pytest.raises(InvalidInput, match="no field status"):
        events.Publisher("training:x").emit("training.error", {"error": "x", "status": "bad"})
    with pytest.raises(InvalidInput, match="level"):
        events.SystemAlert(level=None, message="x")
    assert events.latest("training:x") is None  # nothing refused was published


def test_a_reader_ignores_fields_it_does_not_define_but_skips_defined_ones_of_the_wrong_type():
    from mistudio.events.types import Malformed, parse

    newer = parse("training:x", json.dumps({"type": "training.checkpoint", "seq": 1,
                                             "data": {"step": 3, "path": "/p", "added_later": 1}}))
    assert newer.payload == events.TrainingCheckpoint(step=3, path="/p")
    with pytest.raises(Malformed, match="step must be int"):
        parse("training:x", json.dumps({"type": "training.checkpoint", "seq": 1, "data": {"step": "three"}}))


def test_publish_to_receive_latency(redis_db):
    channel = "training:tr_latency"
    with events.Subscription(channel) as sub:
        sub.get(timeout=0.2)  # connected and subscribed
        latencies = []
        for i in range(200):
            sent = time.perf_counter()
            events.publish(channel, events.TrainingProgress(step=i, total_steps=200))
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
        events.publish(channel, events.TrainingProgress(step=i, total_steps=1100))
    received = []
    with events.Subscription(channel) as sub:

        def more():
            for i in range(1000, 1100):
                events.publish(channel, events.TrainingProgress(step=i, total_steps=1100))
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
        events.publish(channel, events.TrainingProgress(step=i, total_steps=10))
    with events.Subscription(channel, after_seq=7) as sub:
        assert [sub.get(timeout=2).seq for _ in range(3)] == [8, 9, 10]


def test_malformed_messages_are_skipped_and_counted(redis_db):
    channel = "training:tr_bad"
    with events.Subscription(channel) as sub:
        sub.get(timeout=0.2)
        redis_db("pubsub").publish(channel, "not json at all")
        redis_db("pubsub").publish(channel, json.dumps({"type": "training.progress", "seq": "one"}))
        events.publish(channel, events.TrainingCompleted(final_metrics={"loss": 0.1}))
        event = sub.get(timeout=5)
        assert event.type == "training.completed" and event.terminal
        assert sub.malformed == 2


def test_a_redis_restart_mid_stream_loses_nothing(face, private_redis):
    """Restarted while a subscriber listens; every event after the restart arrives, and the
    reconnect is counted once (sync and asyncio faces alike)."""
    from mistudio.redis import server
    from mistudio.redis.connection import reset_pools

    channel = "training:tr_restart"
    for i in range(5):
        events.publish(channel, events.TrainingProgress(step=i, total_steps=20))
    sub = face(channel)
    assert [sub.get(timeout=5).seq for _ in range(5)] == [1, 2, 3, 4, 5]
    server.restart()  # SHUTDOWN SAVE; same port
    reset_pools()
    for i in range(5, 20):
        events.publish(channel, events.TrainingProgress(step=i, total_steps=20))
    got = [sub.get(timeout=15) for _ in range(15)]
    assert None not in got, "stalled after the restart"
    assert [e.seq for e in got] == list(range(6, 21))
    assert sub.get(timeout=1.5) is None
    assert sub.reconnects == 1


def test_one_connection_follows_a_changing_set_of_channels(redis_db):
    """add/remove on an open subscription (what the JupyterLab fan-out does per socket): the new
    channel's history after its seq, then live; a removed channel is UNSUBSCRIBEd and goes quiet."""
    numsub = lambda name: dict(redis_db("pubsub").pubsub_numsub(name))[name]  # noqa: E731
    with pytest.raises(InvalidInput, match="channels"):
        events.Subscription([])
    a, b = "training:tr_dyn_a", "training:tr_dyn_b"
    with events.Subscription([], empty_ok=True) as sub:
        assert sub.get(timeout=0.3) is None  # nothing to listen to yet: it waits
        events.publish(a, events.TrainingProgress(step=0, total_steps=9))
        sub.add(a)
        assert (sub.get(timeout=5).channel, sub.get(timeout=0)) == (a, None)
        events.publish(b, events.TrainingProgress(step=0, total_steps=9))
        sub.add(b, after_seq=None)  # from its end: the event before is not delivered
        wait_for(lambda: numsub(b) == 1 or sub.get(timeout=0.1), message="b subscribed")
        events.publish(b, events.TrainingProgress(step=1, total_steps=9))
        got = sub.get(timeout=5)
        assert (got.channel, got.seq) == (b, 2)
        sub.remove(a)
        wait_for(lambda: numsub(a) == 0 or sub.get(timeout=0.1), message="a unsubscribed")
        assert numsub(a) == 0 and numsub(b) == 1 and sub.channels == [b]
        events.publish(a, events.TrainingProgress(step=1, total_steps=9))
        assert sub.get(timeout=1.5) is None


def test_async_subscription(redis_db):
    channel = "features:tr_async"
    events.publish(channel, events.FeaturesProgress(done=1, total=3))

    async def main():
        async with events.Subscription(channel) as sub:
            first = await sub.aget(timeout=5)
            events.publish(channel, events.FeaturesProgress(done=2, total=3))
            events.publish(channel, events.FeaturesCompleted(total_features=3))
            rest = [await sub.aget(timeout=5), await sub.aget(timeout=5)]
            return [first] + rest

    got = asyncio.run(main())
    assert [e.seq for e in got] == [1, 2, 3] and got[-1].terminal


def test_publisher_coalesces_progress_and_always_sends_the_end(redis_db):
    channel = "training:tr_throttle"
    pub = events.Publisher(channel, min_interval=0.2)
    started = time.perf_counter()
    for step in range(5000):
        pub.emit(events.TrainingProgress(step=step, total_steps=5000))
    pub.emit(events.TrainingCheckpoint(step=4999, path="/tmp/ckpt"))
    pub.emit(events.TrainingCompleted(final_metrics={"loss": 0.01}))
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
        events.publish(channel, events.DatasetProgress(tokens_done=i, tokens_total=1000))
    length = redis_db("pubsub").xlen(keys.event_history(channel))
    assert 100 <= length < 400  # MAXLEN ~ trims in whole nodes
    assert events.latest(channel).payload == events.DatasetProgress(tokens_done=999, tokens_total=1000)


# --- restarts, bad messages, a Redis that lost data (both faces) ---------------------------


def test_a_subscriber_survives_redis_being_killed(face, private_redis):
    """SIGKILL under a subscriber that keeps polling through the outage: it never raises,
    and every event published once Redis is back arrives, in order, none twice."""
    channel = "training:tr_kill"
    _progress(channel, range(5))
    sub = face(channel)
    received, errors, stop = [], [], threading.Event()

    def consume():
        try:
            while not stop.is_set():
                event = sub.get(timeout=0.5)
                if event is not None:
                    received.append(event)
        except Exception as exc:  # the failure this test is about
            errors.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        wait_for(lambda: len(received) >= 5 or errors, message="the first 5 events")
        _kill_and_start(private_redis, outage=2.0)
        _progress(channel, range(5, 20))
        wait_for(lambda: len(received) >= 20 or errors, timeout=30, message="the events after the restart")
        time.sleep(1.5)  # a quiet-second history read must not deliver anything again
    finally:
        stop.set()
        consumer.join(30)
    assert errors == []
    assert [e.data["step"] for e in received] == list(range(20))
    assert sub.reconnects >= 1


@pytest.mark.parametrize("new_events_before_reconnect", [True, False], ids=["events-waiting", "quiet"])
def test_a_restart_that_lost_writes_does_not_blank_the_channel(face, private_redis, redis_admin,
                                                              new_events_before_reconnect):
    """Redis comes back without its last writes: its counter went back from 15 to 10, so new
    events reuse seqs 11..15. They are new events: all delivered, and nothing twice."""
    from mistudio.redis.connection import get_client

    channel = "training:tr_lost"
    _progress(channel, range(10))
    sub = face(channel)
    assert [sub.get(timeout=5).data["step"] for _ in range(10)] == list(range(10))
    redis_admin("pubsub").config_set("appendonly", "no")  # from here on in memory only: the kill loses it
    _progress(channel, range(10, 15))
    assert [sub.get(timeout=5).data["step"] for _ in range(5)] == list(range(10, 15))
    _kill_and_start(private_redis, outage=0.2)
    assert get_client("pubsub").get(keys.event_seq(channel)) == "10"
    if not new_events_before_reconnect:
        assert sub.get(timeout=1.5) is None  # reconnects, finds the history shorter than its cursor
    _progress(channel, range(15, 23))
    got = [sub.get(timeout=15) for _ in range(8)]
    assert None not in got, f"stalled after {got.index(None)} of 8 new events"
    assert [e.data["step"] for e in got] == list(range(15, 23))
    assert [e.seq for e in got] == list(range(11, 19))
    assert sub.get(timeout=1.5) is None
    assert sub.rewinds == 1 and sub.last == {channel: 18}


def test_bad_messages_are_skipped_and_counted_and_later_events_all_arrive(face, redis_db):
    channel = "training:tr_garbage"
    sub = face(channel)
    assert sub.get(timeout=0.3) is None  # subscribed
    _progress(channel, range(100))
    for raw in BAD_MESSAGES.values():
        redis_db("pubsub").publish(channel, raw)
    _progress(channel, range(100, 250))
    got = [sub.get(timeout=10) for _ in range(250)]
    assert None not in got, f"stalled after {got.index(None)} of 250 events"
    assert [e.data["step"] for e in got] == list(range(250))
    assert sub.get(timeout=1.2) is None
    assert sub.skipped == Counter(list(BAD_MESSAGES))  # each one skipped, once, for its reason
    assert sub.malformed == len(BAD_MESSAGES)
    assert sub.last == {channel: 250}


def test_a_forged_huge_seq_cannot_blank_the_channel(face, redis_db):
    """Before: one message with a huge seq made every later event a 'duplicate' (250 of 250 lost)."""
    channel = "training:tr_huge_seq"
    sub = face(channel)
    assert sub.get(timeout=0.3) is None
    redis_db("pubsub").publish(channel, _forged(10**9))
    redis_db("pubsub").publish(channel, _forged(2**63))
    _progress(channel, range(250))
    got = [sub.get(timeout=10) for _ in range(250)]
    assert None not in got, f"stalled after {got.index(None)} of 250 events"
    assert [e.seq for e in got] == list(range(1, 251))
    assert sub.get(timeout=1.2) is None  # read on: the live copies are duplicates now
    assert sub.skipped == {"seq beyond the channel's history": 2}
    assert sub.last == {channel: 250}


def test_the_train_wait_follower_does_not_crash_on_bad_messages(workers, redis_db, capsys, caplog):
    """`mistudio train --wait` follows the job with cli.progress.follow (the sync face)."""
    from mistudio import jobs
    from mistudio.cli.progress import follow

    job = jobs.submit("diagnostics.echo", {"n": 1})  # stays queued until a worker starts, below
    channel = keys.training_channel(job.id)
    outcome = {}

    def run():
        try:
            outcome["record"] = follow(job, channel, poll=0.2)
        except BaseException as exc:  # what used to end `train --wait` with exit 1
            outcome["error"] = exc

    follower = threading.Thread(target=run)
    follower.start()
    client = redis_db("pubsub")
    wait_for(lambda: client.pubsub_numsub(channel)[0][1] == 1, message="the follower subscribed")
    for raw in BAD_MESSAGES.values():
        client.publish(channel, raw)
    for step in range(1, 11):
        events.publish(channel, events.TrainingProgress(step=step, total_steps=10, metrics={"loss": 1 / step}))
    events.publish(channel, events.TrainingCompleted(final_metrics={"loss": 0.1}))
    shown = []
    wait_for(lambda: shown.append(capsys.readouterr().err) or "10/10" in "".join(shown), timeout=30,
             message="the progress bar at 10/10")
    workers.start("cpu")  # now the job runs and ends; the follower returns its record
    follower.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["record"]["state"] == "succeeded"
    warned = " ".join(r.getMessage() for r in caplog.records if r.name == "mistudio.events")
    assert all(reason in warned for reason in BAD_MESSAGES)


def test_a_corrupt_entry_in_history_is_skipped_by_readers_and_subscribers(face, redis_db):
    channel = "training:tr_corrupt_history"
    _progress(channel, range(3))
    redis_db("pubsub").xadd(keys.event_history(channel), {"m": b"\xff\xfe"}, id="0-4")  # not the publish script's
    _progress(channel, range(3, 5))
    assert [e.seq for e in events.history(channel)] == [1, 2, 3, 5, 6]
    sub = face(channel)
    assert [sub.get(timeout=5).seq for _ in range(5)] == [1, 2, 3, 5, 6]
    assert sub.get(timeout=0.3) is None
    assert sub.skipped == {"not UTF-8": 1} and sub.last == {channel: 6}
    redis_db("pubsub").set(keys.event_latest(channel), "[]")
    assert events.latest(channel) is None


def test_a_forged_next_seq_does_not_hide_the_real_event_with_that_seq(face, redis_db):
    """A forged last + 1 is delivered (no round trip on the latency path), but the real event
    with that seq still arrives: a duplicate seq with another message makes the history re-read."""
    channel = "training:tr_forged_next"
    _progress(channel, range(3))
    sub = face(channel)
    assert [sub.get(timeout=5).seq for _ in range(3)] == [1, 2, 3]
    redis_db("pubsub").publish(channel, _forged(4))
    assert sub.get(timeout=5).data["step"] == -1
    _progress(channel, range(3, 5))
    got = [sub.get(timeout=5) for _ in range(2)]
    assert [(e.seq, e.data["step"]) for e in got] == [(4, 3), (5, 4)]
    assert sub.get(timeout=1.2) is None


def test_without_history_a_subscriber_starts_at_the_channels_end(face, redis_db):
    channels = ["training:tr_live_a", "training:tr_live_b"]
    _progress(channels[0], range(3))
    sub = face(channels, history=False)
    assert sub.get(timeout=0.5) is None  # the 3 old events are not delivered
    _progress(channels[1], range(2))
    _progress(channels[0], range(3, 4))
    got = [sub.get(timeout=5) for _ in range(3)]
    assert sorted((e.channel, e.seq) for e in got) == [(channels[0], 4), (channels[1], 1), (channels[1], 2)]
    assert sub.last == {channels[0]: 4, channels[1]: 2}


def test_bad_subscription_arguments_are_refused_naming_the_field():
    with pytest.raises(InvalidInput, match="channels"):
        events.Subscription([])
    with pytest.raises(InvalidInput, match="after_seq"):
        events.Subscription("training:x", after_seq=-1)
    with pytest.raises(InvalidInput, match="after_seq.*not subscribed"):
        events.Subscription("training:x", after_seq={"training:y": 3})
    with pytest.raises(InvalidInput, match="history"):
        events.Subscription("training:x", after_seq=5, history=False)
