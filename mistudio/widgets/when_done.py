"""Do something when a job ends, without holding the notebook: `monitor.then(fn)` / `job.then(fn)`.

`await monitor.wait()` keeps its cell running until the job ends, and a Jupyter kernel runs one
cell at a time, so every cell run meanwhile waits behind it. `then` returns at once instead: it
shows a waiting line, and a task on the kernel's event loop calls fn(job) when the job has ended
(after the monitor, if any, has drawn its end), then replaces the line with what fn printed and
returned: plain outputs, so a saved notebook keeps them. An exception in fn is shown there too.
Outside a kernel (a script) there is no loop to run on: `then` waits for the job, then calls fn.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import io
import traceback

from IPython.display import display

from mistudio.queue.records import TERMINAL
from mistudio.views.display import bundle_of, html_bundle, text_bundle
from mistudio.widgets.polling import kernel_loop


def _combine(printed: str, value) -> dict:
    """One output for what fn printed (shown first) and what it returned."""
    if value is None:
        return text_bundle(printed.rstrip("\n") or "(done)")
    bundle = bundle_of(value)
    if printed and "text/html" in bundle:
        bundle["text/html"] = f"<pre style='margin:0 0 6px 0'>{html.escape(printed)}</pre>" + bundle["text/html"]
    if printed:
        bundle["text/plain"] = printed + bundle.get("text/plain", "")
    return bundle


class WhenDone:
    def __init__(self, job, fn, *, monitor=None, poll: float = 1.0):
        if not callable(fn):
            raise TypeError(f"then() takes a function of the job, got {fn!r}")
        self.job, self.fn, self.monitor, self.poll = job, fn, monitor, poll
        self.done = False
        self.value = None
        self.printed = ""
        self.error: str | None = None  # fn's traceback, if it raised
        self._handle = None
        self.task: asyncio.Task | None = None

    def waiting_text(self) -> str:
        name = getattr(self.fn, "__name__", "the function")
        return f"When {self.job.id} ends, {name}(job) runs here. The kernel is free meanwhile."

    def show(self) -> "WhenDone":
        """Show the waiting line and start waiting (called by then())."""
        loop = kernel_loop()
        if loop is None:
            self.job.wait()
            self._call()
            display(self.bundle(), raw=True)
            return self
        self._handle = display(html_bundle(f"<i style='color:#666'>{html.escape(self.waiting_text())}</i>",
                                           self.waiting_text()), raw=True, display_id=True)
        self.task = loop.create_task(self._wait_then_call())
        return self

    async def _wait_then_call(self) -> None:
        try:
            if self.monitor is not None:
                task = self.monitor.start()
                if task is not None:
                    await asyncio.shield(task)
            while (await asyncio.to_thread(self.job.record))["state"] not in TERMINAL:
                await asyncio.sleep(self.poll)
            self._call()
        except Exception:  # e.g. Redis went away: say so where the result would have been
            self.error, self.done = traceback.format_exc(), True
        self._handle.update(self.bundle(), raw=True)

    def _call(self) -> None:
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):  # fn runs on the loop's thread: only its prints land here
                self.value = self.fn(self.job)
        except Exception:
            self.error = traceback.format_exc()
        self.printed = out.getvalue()
        self.done = True

    def bundle(self) -> dict:
        if self.error:
            text = self.printed + self.error
            return {"text/html": f"<pre style='margin:0;color:#b00'>{html.escape(text)}</pre>", "text/plain": text}
        return _combine(self.printed, self.value)

    async def wait(self) -> None:
        """Await fn's end (this holds the cell, as `await monitor.wait()` does)."""
        if self.task is not None:
            await asyncio.shield(self.task)

    def __repr__(self) -> str:
        return f"<then {getattr(self.fn, '__name__', 'fn')} of {self.job.id}: {'done' if self.done else 'waiting'}>"

    def _ipython_display_(self) -> None:
        """Shown already by then(): as a cell's last value it adds nothing."""


def when_done(job, fn, *, poll: float = 1.0) -> WhenDone:
    """fn(job) when the job ends, shown in this cell (what `job.then(fn)` does)."""
    return WhenDone(job, fn, poll=poll).show()
