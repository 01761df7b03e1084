"""Every event type, defined once: its fields (typed, required or optional), its channel kind,
whether it ends the channel's run; and the Event a subscriber receives.

One frozen dataclass per type, registered by its name in EVENT_TYPES. Producers build events
through them (`TrainingProgress(step=1, total_steps=10)`: a field not in the definition is a
TypeError, a wrong type an InvalidInput, both at build time); consumers read the typed value
(`event.payload.step`), never guessed dict keys. On the wire nothing changes: the data dict is
the definition's fields (those left None are omitted). A reader ignores fields it does not define
(a newer producer's), but a message whose defined fields have the wrong type is Malformed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import types as pytypes
import typing
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, NamedTuple

from mistudio.errors import InvalidInput
from mistudio.redis import keys
from mistudio.validation import preview

# Channel kind -> the keys.py function naming its channel (the seed's naming convention).
# System events have fixed channels (keys.SYSTEM_STATUS_CHANNEL, keys.SYSTEM_ALERTS_CHANNEL).
CHANNELS = {
    "training": keys.training_channel,
    "features": keys.features_channel,
    "dataset": keys.dataset_download_channel,
    "model": keys.model_download_channel,
    "dataset_process": keys.dataset_process_channel,
    "generation": keys.generation_channel,
}
SYSTEM = "system"


def channel_for(kind: str, ident: str) -> str:
    try:
        return CHANNELS[kind](ident)
    except KeyError:
        raise InvalidInput("kind", f"unknown channel kind {kind!r}", f"use one of {', '.join(CHANNELS)}") from None


class Position(NamedTuple):
    """Where a progress event says its job is: the phase, and done/total of it (None: unknown)."""

    phase: str | None
    done: float | None
    total: float | None
    unit: str | None = None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, max(0.0, float(self.done or 0) / float(self.total)))


class EventData:
    """Base of the definitions: the type's name, channel kind(s) and role, checked fields."""

    type: ClassVar[str]
    channels: ClassVar[tuple[str, ...]]
    terminal: ClassVar[bool] = False  # nothing more comes on the channel for this run after it
    throttled: ClassVar[bool] = False  # a Publisher coalesces it (the latest wins)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_value(self.type, f.name, getattr(self, f.name), _hints(type(self))[f.name])

    def to_data(self) -> dict:
        """The data dict that goes on the wire (fields left None omitted)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_data(cls, data: dict, *, strict: bool = True):
        """The typed value of a data dict. strict (building): a field not defined is refused;
        not strict (reading): it is ignored."""
        if not isinstance(data, dict):
            raise InvalidInput("data", f"must be a dict, got {type(data).__name__}", "pass the event's fields as a dict")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in data if k not in names]
        if unknown and strict:
            raise InvalidInput("data", f"{cls.type} has no field {', '.join(map(str, unknown))}",
                               f"use only {', '.join(sorted(names)) or 'no fields'} (mistudio/events/types.py)")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and _required(f)]
        if missing:
            raise InvalidInput("data", f"{cls.type} needs {', '.join(missing)}", f"include {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def position(self) -> Position:
        return Position(None, None, None)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


_HINTS: dict[type, dict] = {}


def _hints(cls: type) -> dict:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _accepts(kind, value) -> bool:
    if kind is typing.Any:
        return True
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(kind) or kind)


def _check_value(event_type: str, name: str, value, hint) -> None:
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, pytypes.UnionType) else (hint,)
    if not any(_accepts(kind, value) for kind in kinds):
        wanted = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
        raise InvalidInput(f"data.{name}", f"{event_type}'s {name} must be {wanted}, got {preview(value)}",
                           f"pass {name} as {wanted}")


EVENT_TYPES: dict[str, type[EventData]] = {}


def event(name: str, *, channels: tuple[str, ...], terminal: bool = False, throttled: bool = False):
    """Register a definition: a frozen dataclass named `name` on channels of these kinds."""

    def register(cls):
        cls = dataclass(frozen=True)(cls)
        cls.type, cls.channels, cls.terminal, cls.throttled = name, channels, terminal, throttled
        EVENT_TYPES[name] = cls
        return cls

    return register


# --- training:{id} ------------------------------------------------------------------------


# The causal metrics a training of a causal LM measures at its eval steps (sae/evaluation.py).
CAUSAL_METRICS = ("ce_loss_recovered", "kl_divergence", "ce_clean", "ce_spliced", "ce_zero")


@event("training.progress", channels=("training",), throttled=True)
class TrainingProgress(EventData):
    """A training's progress (tasks/training.py's ProgressEvents). During a preparation phase
    (loading the model, tokenizing, caching activations) the phase_* fields say how far it is;
    during "training" metrics holds the trainer's numbers (loss, l0, ...) and, for a causal LM
    once an eval step has run, that eval's CAUSAL_METRICS with its `eval_step`. A sweep (many SAEs
    on one activation pass) reports its members together, once all have reported a step: `members`
    holds each one's {"training_id", "label", "metrics"}, and `metrics` only what they share
    (SWEEP_METRICS: the stream's tokens/s, the process' peak memory)."""

    step: int
    total_steps: int
    progress: float = 0.0  # percent of the steps
    phase: str = "training"
    metrics: dict = field(default_factory=dict)
    members: list | None = None
    estimated_remaining_seconds: float | None = None
    phase_done: float | None = None
    phase_total: float | None = None
    phase_unit: str | None = None
    phase_rate: float | None = None
    phase_remaining_seconds: float | None = None

    def position(self) -> Position:
        if self.phase != "training":
            return Position(self.phase, self.phase_done, self.phase_total, self.phase_unit)
        return Position(self.phase, self.step, self.total_steps or None, "step")


@event("training.checkpoint", channels=("training",))
class TrainingCheckpoint(EventData):
    step: int
    path: str | None = None
    member: int | None = None  # a sweep's member (index), whose run the checkpoint is in
    training_id: str | None = None  # that member's run


@event("training.completed", channels=("training",), terminal=True)
class TrainingCompleted(EventData):
    step: int | None = None
    final_metrics: dict = field(default_factory=dict)
    sae_path: str | None = None
    duration: float | None = None  # seconds
    members: list | None = None  # a sweep: each member's {"training_id", "label", "sae_path", "final_metrics"}


@event("training.stopped", channels=("training",), terminal=True)
class TrainingStopped(EventData):
    """Stopped before the end (cancelled, or its time limit), no export: the job ends here."""

    step: int
    reason: str


@event("training.error", channels=("training",), terminal=True)
class TrainingError(EventData):
    error: str


# --- features:{id} ------------------------------------------------------------------------


@event("features.progress", channels=("features",), throttled=True)
class FeaturesProgress(EventData):
    done: int  # contexts analysed
    total: int
    phase: str | None = None
    tokens: int | None = None

    def position(self) -> Position:
        return Position(self.phase, self.done, self.total, "contexts")


@event("features.completed", channels=("features",), terminal=True)
class FeaturesCompleted(EventData):
    training_id: str | None = None
    status: str = "succeeded"
    extraction_id: str | None = None
    results_dir: str | None = None
    duration: float | None = None
    total_features: int | None = None
    avg_activation_frequency: float | None = None
    dead_neurons: int | None = None
    dense_features: int | None = None
    n_tokens: int | None = None
    mean_l0: float | None = None
    explained_variance: float | None = None  # of the SAE's reconstructions of the held-out tokens
    fvu: float | None = None


@event("features.stopped", channels=("features",), terminal=True)
class FeaturesStopped(EventData):
    """Stopped before the end (cancelled, or its time limit), nothing written: the job ends here."""

    training_id: str
    reason: str


@event("features.error", channels=("features",), terminal=True)
class FeaturesError(EventData):
    error: str
    training_id: str | None = None


# --- generation:{job_id} (a steer job) -----------------------------------------------------


@event("generation.token", channels=("generation",))
class GenerationToken(EventData):
    """One sampled token of one completion (never coalesced: the stream is the completion).
    branch "default" (steered_index None) or "steered" (steered_index: which steered completion,
    one per sweep strength); position: the token's index in its completion."""

    prompt_index: int
    branch: str
    # field(): a required field, though EventData's position() method has the same name (never called
    # on a token: it is no progress type)
    position: int = field()
    token: str
    token_id: int
    logprob: float
    steered_index: int | None = None


@event("generation.completed", channels=("generation",), terminal=True)
class GenerationCompleted(EventData):
    """Every completion is done; the job's result holds them (Job.result())."""

    training_id: str
    method: str
    n_prompts: int
    n_tokens: int  # generation.token events sent
    duration: float | None = None


@event("generation.stopped", channels=("generation",), terminal=True)
class GenerationStopped(EventData):
    """Stopped before the end (cancelled, or its time limit): the job ends here."""

    training_id: str
    reason: str
    n_tokens: int | None = None


@event("generation.error", channels=("generation",), terminal=True)
class GenerationError(EventData):
    error: str


# --- model:{id}:download, dataset:{id}:download, dataset:{id}:process ----------------------


@event("download.progress", channels=("model", "dataset"), throttled=True)
class DownloadProgress(EventData):
    """Bytes and files of a hub download; the last one has done=True and the local path."""

    downloaded_bytes: int | None = None
    total_bytes: int | None = None
    files_done: int | None = None
    files_total: int | None = None
    repo_id: str | None = None
    model_id: str | None = None
    dataset_id: str | None = None
    done: bool = False
    path: str | None = None

    def position(self) -> Position:
        if self.done:
            return Position("downloading", 1, 1)
        if self.total_bytes:
            return Position("downloading", self.downloaded_bytes, self.total_bytes, "bytes")
        return Position("downloading", self.files_done, self.files_total, "files")


@event("dataset.progress", channels=("dataset_process",), throttled=True)
class DatasetProgress(EventData):
    """Tokenizing a corpus into contexts; the last one has done=True and the dataset's stats."""

    stage: str | None = None
    tokens_done: int | None = None
    tokens_total: int | None = None
    documents: int | None = None
    dataset_id: str | None = None
    done: bool = False
    stats: dict | None = None

    def position(self) -> Position:
        if self.done:
            return Position("tokenizing", 1, 1)
        return Position("tokenizing", self.tokens_done, self.tokens_total, "tokens")


# --- system:status, system:alerts ---------------------------------------------------------


@event("system.status", channels=(SYSTEM,), throttled=True)
class SystemStatus(EventData):
    """The leader's round (coord/duties.py): who leads, queue counts, workers, metrics, alerts."""

    leader: str | None = None
    term: int | None = None
    queues: dict = field(default_factory=dict)
    workers: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    alerts: list = field(default_factory=list)


@event("system.alert", channels=(SYSTEM,))
class SystemAlert(EventData):
    """An alert starting, changing level, or resolved (monitoring.py), or from a cache (cache.py)."""

    level: str  # warning | critical | resolved
    message: str
    name: str | None = None
    value: float | None = None
    warning: float | None = None
    critical: float | None = None
    source: str | None = None
    namespace: str | None = None


# After one of these nothing more comes on the channel for this run.
TERMINAL_TYPES = frozenset(name for name, cls in EVENT_TYPES.items() if cls.terminal)
THROTTLED = frozenset(name for name, cls in EVENT_TYPES.items() if cls.throttled)


def definition(event_type: str) -> type[EventData]:
    try:
        return EVENT_TYPES[event_type]
    except (KeyError, TypeError):
        raise InvalidInput("type", f"unknown event type {event_type!r}", f"use one of {', '.join(EVENT_TYPES)}") from None


def check(event_type: str, data: dict) -> None:
    """Raise InvalidInput unless data is exactly an event_type (defined fields, right types)."""
    definition(event_type).from_data(data)


def progress_of(snapshot: dict | None) -> EventData | None:
    """The typed progress in a job record's snapshot (tasks/reporting.py writes the event type
    beside the data under "event"); None for a snapshot that is not a progress event's."""
    if not isinstance(snapshot, dict) or snapshot.get("event") not in EVENT_TYPES:
        return None
    try:
        return EVENT_TYPES[snapshot["event"]].from_data(snapshot, strict=False)
    except (InvalidInput, TypeError):
        return None


@dataclass(frozen=True)
class Event:
    channel: str
    type: str
    data: dict
    timestamp: float
    seq: int

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @cached_property
    def payload(self) -> EventData:
        """The typed value of data (its definition's fields; others ignored)."""
        return definition(self.type).from_data(self.data, strict=False)

    def to_dict(self) -> dict:
        return {"channel": self.channel, "type": self.type, "data": self.data, "timestamp": self.timestamp, "seq": self.seq}


# Seqs are stream ids "0-{seq}" (64-bit): the publish script can give no larger one.
MAX_SEQ = 2**64 - 1


class Malformed(ValueError):
    """A message on a channel that is not a miStudio event; `reason` says why, in a few words."""

    def __init__(self, channel: str, reason: str):
        self.channel = channel
        self.reason = reason
        super().__init__(f"{channel}: {reason}")


def parse(channel: str, raw: str | bytes) -> Event:
    """The Event in one message as the publish script writes it; Malformed for anything else.

    Never raises anything but Malformed, whatever the bytes: a subscriber skips and counts."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed(channel, "not UTF-8") from None
    if not isinstance(raw, str):
        raise Malformed(channel, f"not text ({type(raw).__name__})")
    try:
        message = json.loads(raw)
    except RecursionError:
        raise Malformed(channel, "JSON nested too deeply") from None
    except ValueError:
        raise Malformed(channel, "not JSON") from None
    if not isinstance(message, dict):
        raise Malformed(channel, f"not a JSON object ({type(message).__name__})")
    missing = [name for name in ("type", "seq") if name not in message]
    if missing:
        raise Malformed(channel, f"missing {', '.join(missing)}")
    event_type, seq, data = message["type"], message["seq"], message.get("data", {})
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise Malformed(channel, "unknown type")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise Malformed(channel, "seq not an integer in [0, 2**64)")
    if not isinstance(data, dict):
        raise Malformed(channel, "data not an object")
    timestamp = message.get("timestamp") or 0.0
    try:
        if isinstance(timestamp, bool) or not math.isfinite(timestamp):
            raise TypeError
    except (TypeError, OverflowError):
        raise Malformed(channel, "timestamp not a finite number") from None
    parsed = Event(channel, event_type, data, float(timestamp), seq)
    try:
        parsed.payload  # typed now: a reader never meets a defined field of the wrong type
    except InvalidInput as exc:
        lacking = [f.name for f in dataclasses.fields(EVENT_TYPES[event_type]) if _required(f) and f.name not in data]
        if lacking:
            raise Malformed(channel, f"{event_type} data without {', '.join(lacking)}") from None
        raise Malformed(channel, f"{event_type} data: {exc.problem}") from None
    return parsed
