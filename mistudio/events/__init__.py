"""Live progress: typed events (one definition per type in types.py) on the seed's pub/sub channels, with history.

Workers publish (`publish`, or a throttled `Publisher` that never blocks the caller);
notebooks subscribe (`Subscription`: a sync iterator, or `async for` on the kernel's
event loop). Every event is also kept in a capped per-channel stream, so a subscriber
that joins late or reconnects gets the backlog first, then live events: no gap, no
duplicate (subscribe first, read history, drop by seq). The subscription rules live in one
sans-IO state machine (`state.py`) that the sync and asyncio faces both drive; it survives
Redis restarts (also ones that lost writes) and skips and counts bad messages.
"""

from mistudio.events.publish import Publisher, history, latest, publish
from mistudio.events.subscribe import Subscription
from mistudio.events.types import (CHANNELS, EVENT_TYPES, TERMINAL_TYPES, DatasetProgress, DownloadProgress, Event,
                                   EventData, FeaturesCompleted, FeaturesError, FeaturesProgress, FeaturesStopped,
                                   Position, SystemAlert, SystemStatus, TrainingCheckpoint, TrainingCompleted,
                                   TrainingError, TrainingProgress, TrainingStopped, channel_for, progress_of)

__all__ = [
    "CHANNELS", "EVENT_TYPES", "TERMINAL_TYPES", "DatasetProgress", "DownloadProgress", "Event", "EventData",
    "FeaturesCompleted", "FeaturesError", "FeaturesProgress", "FeaturesStopped", "Position", "Publisher",
    "Subscription", "SystemAlert", "SystemStatus", "TrainingCheckpoint", "TrainingCompleted", "TrainingError",
    "TrainingProgress", "TrainingStopped", "channel_for", "history", "latest", "progress_of", "publish",
]
