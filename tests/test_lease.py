"""One lease primitive (mistudio/coord/lease.py) under the GPU lock, a concurrency slot and the
leader: the same contract for each, on a real Redis."""

from __future__ import annotations

import threading

import pytest

from helpers import wait_for
from mistudio.coord import assignments, lease, leader, locks, slots
from mistudio.coord.jobguard import JobGuard
from mistudio.settings import get_settings

TTL = 0.6  # seconds: short, so a lapse happens within the test


def _gpu(client, holder, ttl=TTL):
    return locks.GpuLock("lease_test_dev", holder=holder, ttl=ttl, client=client)


def _slot(client, holder, ttl=TTL):
    return slots.Slot("trainings", scope="lease_test", holder=holder, ttl=ttl, client=client)  # limit 1


def _leader(client, holder, ttl=TTL):
    return leader.leadership(client, holder, ttl)


@pytest.mark.parametrize("make", [_gpu, _slot, _leader], ids=["gpu-lock", "slot", "leader"])
def test_each_lease_is_held_by_one_token_and_a_lapsed_holder_touches_nothing_of_its_successor(redis_db, make):
    client = redis_db("locks")
    first, second = make(client, "first"), make(client, "second")
    assert isinstance(first, lease.Lease)
    assert first.try_acquire() and first.held
    assert not second.try_acquire()  # taken
    assert first.renew()
    wait_for(second.try_acquire, timeout=10, interval=0.05, message="the first lease lapsing")
    assert not first.renew()  # lapsed: it cannot extend the successor's
    assert not first.release()  # nor delete it
    assert second.renew()
    assert second.release() and not second.held
    assert not second.release()  # twice is a no-op
    third = make(client, "third")
    assert third.try_acquire()
    third.release()


@pytest.mark.parametrize("make", [_gpu, _leader], ids=["gpu-lock", "leader"])
def test_an_exclusive_lease_numbers_each_new_holder_higher(redis_db, make):
    client = redis_db("locks")
    numbers = []
    for i in range(3):
        held = make(client, f"holder{i}")
        assert held.try_acquire()
        numbers.append(held.number)
        assert lease.current(client, held.key)["number"] == held.number
        held.release()
    assert numbers == sorted(numbers) and len(set(numbers)) == 3


@pytest.mark.parametrize("make", [_gpu, _slot], ids=["gpu-lock", "slot"])
def test_a_lease_held_with_a_context_manager_is_renewed_in_the_background_and_busy_otherwise(redis_db, make):
    client = redis_db("locks")
    ttl = 1.0  # renewed every ttl/3: a loaded machine may delay one renewal, not three
    with make(client, "mine", ttl) as held:
        other = make(client, "other", ttl)
        for _ in range(5):  # 2.5 lease lengths: the background renewal keeps it ours
            assert not other.acquire(timeout=ttl / 2, poll=0.05)
        with pytest.raises(lease.ResourceBusy):
            with make(client, "third"):
                pass
        assert held.held
    assert other.try_acquire()


def test_a_job_waiting_for_its_slot_says_so_and_runs_once_the_slot_is_free(redis_db):
    settings = get_settings()
    other = slots.Slot("trainings")
    assert other.try_acquire()
    guard = JobGuard(settings, job_id="tr_wait1", slot="trainings", worker_id="dev:cpu:9", gpu=False)
    stop, got = threading.Event(), []
    job = threading.Thread(target=lambda: got.append(guard.acquire(wait=stop.wait)))
    job.start()
    try:
        def status():
            guard.assign()  # what the keeper thread does on each visit
            data = assignments.get(redis_db("locks"), guard.job_id)
            return data and data["status"]

        assert wait_for(status, message="the waiting status") == "waiting for a trainings slot"
        other.release()
        wait_for(lambda: status() == "running", message="running once the slot is ours")
        job.join(10)
        assert got == [True] and guard.slot.holders() == [guard.slot.token]
    finally:
        stop.set()
        job.join(10)
        guard.release()
    assert assignments.get(redis_db("locks"), guard.job_id) is None and guard.slot.holders() == []
