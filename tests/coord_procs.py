"""Real processes for the coordination tests: `python tests/coord_procs.py ROLE ARGS...`.

    gpu-contender DEVICE LOG ROUNDS   take DEVICE's GPU lock ROUNDS times; log "start/end FENCE PID"
    elector NODE LOG TTL              campaign for leadership; while leader, log "MONOTONIC TERM NODE"
    slot-holder NAME SCOPE TTL        take one slot of NAME, print "held", then sleep (to be killed)

Logs are appended with O_APPEND single writes, so lines from several processes never interleave
and their order in the file is the order in which they happened.
"""

from __future__ import annotations

import os
import sys
import time


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def gpu_contender(device: str, log: str, rounds: str) -> None:
    from mistudio.coord import locks
    from mistudio.redis.connection import get_client

    client = get_client("locks")
    for _ in range(int(rounds)):
        lock = locks.GpuLock(device, holder=f"pid{os.getpid()}", ttl=30)
        assert lock.acquire(timeout=90, poll=0.01), "never got the lock"
        _append(log, f"start {lock.fence} {os.getpid()}")
        time.sleep(0.005)  # "use the GPU"
        # the checkpoint write: only the current holder's token passes
        _append(log, f"{'end' if locks.check_fence(client, device, lock.fence) else 'STALE'} {lock.fence} {os.getpid()}")
        assert lock.release()


def elector(node: str, log: str, ttl: str) -> None:
    from mistudio.coord.leader import Elector
    from mistudio.redis.connection import get_client

    e = Elector(get_client("locks"), node, float(ttl))
    e.start()
    while True:
        term = e.term  # None unless we lead right now
        now = time.monotonic()
        if term is not None:
            _append(log, f"{now:.6f} {term} {node}")
        time.sleep(0.05)


def slot_holder(name: str, scope: str, ttl: str) -> None:
    from mistudio.coord.slots import Slot

    slot = Slot(name, scope=scope, ttl=float(ttl), holder=f"pid{os.getpid()}")
    assert slot.try_acquire()
    print("held", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    {"gpu-contender": gpu_contender, "elector": elector, "slot-holder": slot_holder}[role](*args)
