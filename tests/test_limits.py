"""Rate limits and concurrency limits: exact sliding windows, all-or-nothing tiers, the seed's
tiers enforced at submit, slots that free themselves when their holder dies. Real Redis."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import wait_for
from mistudio import jobs, limits, limits_config
from mistudio.coord import slots
from mistudio.redis import keys

pytestmark = pytest.mark.timeout(120)

HELPER = str(Path(__file__).with_name("coord_procs.py"))


def _hammer(n: int, call) -> list:
    """n threads released at once, each making one call; their results."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        barrier.wait()
        results[i] = call()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


# --- sliding windows ------------------------------------------------------------------------


def test_100_threads_hammering_one_limit_admit_exactly_the_limit_per_window(redis_db):
    window = limits.Window("hammer", limit=10, seconds=3)
    key = keys.ratelimit_window("global", "hammer", 3)
    for _ in range(2):  # two windows in a row
        decisions = _hammer(100, lambda: limits.hit([window]))
        admitted = [d for d in decisions if d.allowed]
        assert len(admitted) == 10
        assert sorted(d.remaining for d in admitted) == list(range(10))
        # rejected calls consumed nothing: the window holds exactly the admitted ones
        assert redis_db("ratelimit").zcard(key) == 10
        refused = [d for d in decisions if not d.allowed]
        assert all(0 < d.retry_after <= 3 and d.remaining == 0 for d in refused)
        # Every admitted entry was added before _hammer returned: a full window later all have lapsed
        # (a refusal's retry_after is when the oldest lapses; under load the others come later).
        time.sleep(window.seconds + 0.05)


def test_the_window_slides_rather_than_resetting(redis_db):
    window = limits.Window("slide", limit=3, seconds=2)
    assert [limits.hit([window]).allowed for _ in range(2)] == [True, True]  # t = 0
    time.sleep(1.0)
    assert limits.hit([window]).allowed  # t = 1: full now
    refused = limits.hit([window])
    assert not refused.allowed and 0.5 < refused.retry_after <= 1.0  # the t = 0 pair leaves at t = 2
    time.sleep(refused.retry_after + 0.05)
    assert [limits.hit([window]).allowed for _ in range(3)] == [True, True, False]  # the t = 1 one still counts


def test_requests_with_equal_timestamps_are_all_counted(redis_db):
    """The seed's member was str(time.time()): two requests in the same microsecond merged into one."""
    window = limits.Window("same", limit=1000, seconds=60)
    decisions = _hammer(50, lambda: limits.hit([window]))
    assert all(d.allowed for d in decisions)
    assert redis_db("ratelimit").zcard(keys.ratelimit_window("global", "same", 60)) == 50


def test_burst_10_means_at_most_10_in_any_second_within_100_per_minute(redis_db):
    decisions = _hammer(30, lambda: limits.hit(["api"]))
    assert sum(d.allowed for d in decisions) == 10
    refused = [d for d in decisions if not d.allowed]
    assert {(d.limit, d.window) for d in refused} == {(10, 1.0)}
    # refused by the burst window, so not counted in the minute window either
    assert redis_db("ratelimit").zcard(keys.ratelimit_window("global", "api", 60)) == 10
    time.sleep(max(d.retry_after for d in refused) + 0.05)
    again = [limits.hit(["api"]) for _ in range(10)]
    assert all(d.allowed for d in again)
    assert redis_db("ratelimit").zcard(keys.ratelimit_window("global", "api", 60)) == 20


def test_a_decision_unpacks_as_the_seeds_tuple_and_gives_http_headers(redis_db):
    window = limits.Window("hdr", limit=2, seconds=60)
    allowed, remaining, reset_at, retry_after = limits.hit([window])
    now = time.time()
    assert allowed and remaining == 1 and retry_after == 0 and now < reset_at <= now + 61
    limits.hit([window])
    refused = limits.hit([window])
    headers = refused.headers()
    assert headers["X-RateLimit-Limit"] == "2" and headers["X-RateLimit-Remaining"] == "0"
    assert 55 <= int(headers["Retry-After"]) <= 60
    assert int(headers["X-RateLimit-Reset"]) >= int(now)


def test_the_tiers_are_the_seeds(redis_db):
    w = {tier: [(x.limit, x.seconds) for x in limits.tier_windows(tier)] for tier in limits_config.RATE_TIERS}
    assert w == {"api": [(100, 60), (10, 1)], "training_starts": [(5, 3600)], "downloads": [(10, 3600)],
                 "generations": [(20, 3600)], "dataset_processing": [(5, 3600)]}
    assert limits.tiers_for_task("train_sae") == ["api", "training_starts"]
    assert limits.tiers_for_task("download_dataset") == ["api", "downloads"]
    assert limits.tiers_for_task("process_dataset") == ["api", "dataset_processing"]
    assert limits.tiers_for_task("extract_features") == ["api"]
    assert limits.tiers_for_task("diagnostics.echo") == ["api"]
    assert limits_config.CONCURRENCY == {"trainings": 1, "downloads": 2, "generations": 1, "processing": 1}


# --- enforced at submit ----------------------------------------------------------------------


def _queued(redis_db, queue):
    return redis_db("queue").zcard(keys.queue_pending(queue))


def test_a_refund_gives_the_request_back_in_every_window_once(redis_db):
    tight = [limits.Window("refund_min", 2, 60), limits.Window("refund_sec", 5, 1)]
    first = limits.hit(tight)
    second = limits.hit(tight)
    assert first.allowed and second.allowed and not limits.hit(tight).allowed
    assert limits.refund(second)
    assert not limits.refund(second)  # given back once only
    assert not limits.refund(limits.hit(tight[:1] + [limits.Window("refund_sec", 0, 1)]))  # refused: nothing to give
    assert limits.hit(tight).allowed  # the refunded slot is free again, in both windows
    assert redis_db("ratelimit").zcard(keys.ratelimit_window("global", "refund_min", 60)) == 2


def test_a_submit_over_the_burst_raises_rate_limited_and_queues_nothing(redis_db):
    for i in range(10):
        jobs.submit("diagnostics.echo", {"i": i})
    with pytest.raises(limits.RateLimited) as info:
        jobs.submit("diagnostics.echo", {"i": 10})
    err = info.value
    assert err.tier == "api" and err.limit == 10 and err.window == 1 and 0 < err.retry_after <= 1
    assert "Fix:" in str(err) and err.headers()["Retry-After"] == "1"
    assert _queued(redis_db, "cpu") == 10 and redis_db("results").zcard(keys.jobs_index()) == 10
    time.sleep(err.retry_after + 0.05)
    jobs.submit("diagnostics.echo", {"i": 11})  # the window slid
    assert _queued(redis_db, "cpu") == 11


def test_the_eleventh_download_in_an_hour_is_refused_for_an_hour(redis_db):
    for i in range(10):
        jobs.submit("download_model", {"model_id": f"org/model-{i}"})
    with pytest.raises(limits.RateLimited, match="download model") as info:
        jobs.submit("download_model", {"model_id": "org/one-too-many"})
    assert info.value.tier == "downloads" and info.value.limit == 10 and info.value.window == 3600
    assert 3500 < info.value.retry_after <= 3600
    assert _queued(redis_db, "io") == 10
    # other tasks still go through (once the one-second burst window has room)
    time.sleep(1.05)
    jobs.submit("diagnostics.echo")


def test_rate_limits_can_be_switched_off_for_benchmarks(redis_db, monkeypatch):
    monkeypatch.setenv("MISTUDIO_RATE_LIMITS", "off")
    for i in range(15):
        jobs.submit("diagnostics.echo", {"i": i})
    assert _queued(redis_db, "cpu") == 15


# --- concurrency slots -------------------------------------------------------------------------


def test_slots_admit_up_to_their_limit_and_a_lapsed_holder_cannot_renew(redis_db):
    holders = [slots.Slot("downloads", scope="test", ttl=1) for _ in range(3)]
    assert [s.try_acquire() for s in holders] == [True, True, False]
    holders[0].release()
    assert holders[2].try_acquire()
    assert holders[1].renew()
    time.sleep(1.1)  # holders 1 and 2 lapse
    assert not holders[1].renew()
    assert holders[0].try_acquire() and slots.Slot("downloads", scope="test").try_acquire()


def test_a_crashed_holders_slot_frees_itself_after_its_ttl(redis_db):
    holder = subprocess.Popen([sys.executable, HELPER, "slot-holder", "trainings", "test", "2"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        mine = slots.Slot("trainings", scope="test", ttl=2)
        assert not mine.try_acquire()
        with pytest.raises(slots.ResourceBusy):
            with slots.slot("trainings", scope="test"):
                pass
        holder.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_for(mine.try_acquire, timeout=10, interval=0.05, message="the dead holder's slot")
        assert time.monotonic() - killed <= 2.5
    finally:
        holder.kill()
        holder.wait(10)


def test_a_slot_held_with_a_context_manager_is_renewed_while_the_work_runs(redis_db):
    with slots.slot("generations", scope="test", ttl=1) as held:
        time.sleep(1.6)  # longer than its lease: renewed in the background
        assert held.holders() == [held.token]
        assert not slots.Slot("generations", scope="test").try_acquire()
    assert slots.Slot("generations", scope="test").try_acquire()
