"""Waiting for something to become free (a lock, a slot) without busy-looping."""

from __future__ import annotations

import time
from typing import Callable


def poll_until(attempt: Callable[[], bool], timeout: float | None, wait: Callable[[float], bool] | None,
               poll: float) -> bool:
    """Call attempt() until it returns True or timeout seconds pass (None: forever).
    wait(seconds) sleeps between tries; if it returns True (e.g. the job must stop) we give up."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not attempt():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if wait is not None:
            if wait(poll):
                return False
        else:
            time.sleep(poll)
    return True
