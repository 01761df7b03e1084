"""Progress of a running job, to both places people look: its job record (a snapshot,
polled by `mistudio jobs`) and its event channel (live, throttled, with history).

Every event goes through its definition (events/types.py): the ML core's progress dicts are
built into the task's progress type, so a field it does not define fails here, at once."""

from __future__ import annotations

from mistudio.events import EVENT_TYPES, EventData, Publisher


class Reporter:
    def __init__(self, job, channel: str, progress: type[EventData] | str, *, min_interval: float = 0.25):
        self.job = job
        self.progress_type = EVENT_TYPES[progress] if isinstance(progress, str) else progress
        self.publisher = Publisher(channel, min_interval=min_interval)

    def __call__(self, report: dict | EventData) -> None:
        """A progress callback for the ML core: cheap, never blocks on Redis. The job record's
        snapshot carries the event type beside the data (events.progress_of reads it back)."""
        progress = report if isinstance(report, EventData) else self.progress_type.from_data(report)
        data = progress.to_data()
        self.job.progress({**data, "event": progress.type})
        self.publisher.emit(progress.type, data)

    def event(self, event: EventData) -> None:
        """An event that is always delivered (checkpoint, completed, stopped, error)."""
        self.publisher.emit(event)

    def close(self, timeout: float = 10.0) -> None:
        self.publisher.close(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
