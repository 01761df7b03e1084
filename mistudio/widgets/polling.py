"""A widget that refreshes itself: fetch data off the loop thread, draw on it."""

from __future__ import annotations

import asyncio

from IPython.display import display


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
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            try:
                loop = asyncio.get_event_loop()
            except RuntimeError:
                return None
            if not loop.is_running():
                return None
        if self._task is None or self._task.done():
            self._task = loop.create_task(self.run())
        return self._task

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _ipython_display_(self) -> None:
        self.refresh()
        display(self.widget)
        self.start()
