"""A widget that refreshes itself: fetch data off the loop thread, draw on it."""

from __future__ import annotations

import asyncio

from IPython.display import display


def kernel_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop a Jupyter kernel runs (widgets' tasks go there), or None outside one."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            return None
        return loop if loop.is_running() else None


def keep_running(task: asyncio.Task | None, make_coro) -> asyncio.Task | None:
    """task if it is still running, else a new task of make_coro() on the kernel's loop (None: no loop)."""
    if task is not None and not task.done():
        return task
    loop = kernel_loop()
    return None if loop is None else loop.create_task(make_coro())


class PollingView:
    """Subclasses implement fetch() (any thread; Redis reads) and draw(data) (the loop thread)."""

    interval = 1.0

    def __init__(self):
        self._task: asyncio.Task | None = None
        self.refreshes = 0

    def fetch(self):
        raise NotImplementedError

    def draw(self, data) -> None:
        raise NotImplementedError

    def refresh(self) -> None:
        """One synchronous refresh (also what the first display shows)."""
        self.draw(self.fetch())
        self.refreshes += 1

    async def run(self, cycles: int | None = None) -> None:
        done = 0
        while cycles is None or done < cycles:
            data = await asyncio.to_thread(self.fetch)
            self.draw(data)
            self.refreshes += 1
            done += 1
            await asyncio.sleep(self.interval)

    def start(self) -> asyncio.Task | None:
        self._task = keep_running(self._task, self.run)
        return self._task

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _ipython_display_(self) -> None:
        self.refresh()
        display(self.widget)
        self.start()
