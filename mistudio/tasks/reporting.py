"""Progress of a running job, to both places people look: its job record (a snapshot,
polled by `mistudio jobs`) and its event channel (live, throttled, with history)."""

from __future__ import annotations

from mistudio.events import Publisher


class Reporter:
    def __init__(self, job, channel: str, progress_type: str, *, min_interval: float = 0.25):
        self.job = job
        self.progress_type = progress_type
        self.publisher = Publisher(channel, min_interval=min_interval)

    def __call__(self, data: dict) -> None:
        """A progress callback for the ML core: cheap, never blocks on Redis."""
        self.job.progress(data)
        self.publisher.emit(self.progress_type, data)

    def event(self, event_type: str, data: dict) -> None:
        """An event that is always delivered (checkpoint, completed, error)."""
        self.publisher.emit(event_type, data)

    def close(self, timeout: float = 10.0) -> None:
        self.publisher.close(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
