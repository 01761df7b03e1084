"""Many SAEs on one pass over the activations: a sweep of k, widths, architectures, learning
rates or hook points trained side by side, each batch read once and fed to every member.

    members = [Member(cfg_k32, run_dir_a), Member(cfg_k64, run_dir_b)]
    results = train_and_export_many(members, {"blocks.3.hook_resid_post": store})

Each member is an ordinary `Trainer` with its own run folder (checkpoints, metrics.jsonl, export),
driven one batch at a time (`train_batch`, `checkpoint`, `finish`): a member trains exactly as a
single run on the same batches would, to the same weights. Members on different hook points of
one model read aligned streams (one per hook point, the same token in the same row).

Resume: every member checkpoints at the same steps. A crash between two members' commits leaves
the later members one checkpoint behind, so a restart resumes every member from the newest step
they all have (keep_checkpoints >= 2 keeps it: the config check refuses 1 for a sweep) and seeks
the streams to where that checkpoint says. A stop is checked once per step for the whole sweep.
No Redis here: callbacks, as in sae/run.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from mistudio.errors import InvalidInput
from mistudio.sae.checkpoint import checkpoint_dir, list_checkpoints
from mistudio.sae.config import TrainingConfig
from mistudio.sae.run import export_run, open_trainer, prepare_run_dir
from mistudio.sae.sweep import check_shared
from mistudio.sae.trainer import Trainer

@dataclass
class Member:
    """One SAE of a sweep: its config, run folder and callbacks (as train_and_export takes them)."""

    config: TrainingConfig
    run_dir: Path | str
    on_progress: Callable[[dict], None] | None = None
    on_checkpoint: Callable[[Path, int], None] | None = None
    evaluator: Callable | None = None


def common_checkpoint_step(run_dirs: list[Path]) -> int | None:
    """The newest checkpoint step every run folder has (None: some member has no checkpoint)."""
    steps = None
    for run_dir in run_dirs:
        have = {int(p.name.split("_")[1]) for p in list_checkpoints(run_dir)}
        steps = have if steps is None else steps & have
    return max(steps) if steps else None


def train_and_export_many(
    members: list[Member],
    streams: Mapping[str, object],
    *,
    should_stop: Callable[[], bool] | None = None,
    before_commit: Callable[[int], bool] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[dict]:
    """Train (or resume) every member on batches of streams[member.config.hook_point], export each;
    returns each member's final metrics (with "stopped": True and no export when should_stop()
    ended it). Streams are iterators of [batch, d_in] tensors, ideally with state_dict() /
    load_state_dict() (an ActivationStore); one of each hook point, aligned row for row."""
    if not members:
        raise InvalidInput("sweep", "has no members", "give at least one SAE config")
    check_shared([m.config for m in members])
    for m in members:
        if m.config.hook_point not in streams:
            raise InvalidInput("streams", f"no activation stream for {m.config.hook_point}",
                               "give one stream per hook point the members train on")
    run_dirs = [prepare_run_dir(m.run_dir) for m in members]
    step = common_checkpoint_step(run_dirs)
    trainers = [open_trainer(m.config, run_dir, checkpoint_dir(run_dir, step) if step is not None else None,
                             on_progress=m.on_progress, on_checkpoint=m.on_checkpoint, before_commit=before_commit,
                             evaluator=m.evaluator)
                for m, run_dir in zip(members, run_dirs)]
    hooks = {}  # hook point -> the trainers on it, in member order
    for trainer in trainers:
        hooks.setdefault(trainer.config.hook_point, []).append(trainer)
    stop = should_stop or (lambda: False)
    stopped = _train(trainers, hooks, streams, stop, on_step)
    results = []
    for trainer in trainers:
        metrics = dict(trainer.last_metrics, stopped=stopped)
        results.append(metrics if stopped else export_run(trainer, metrics, before_commit))
    return results


def _train(trainers: list[Trainer], hooks: dict, streams: Mapping, stop, on_step) -> bool:
    """The lockstep loop; True when a stop ended it."""
    lead = trainers[0]
    if all(t.finished for t in trainers):
        return False  # a redelivery after the last checkpoint: only the exports are left
    iterators, pending = {}, {}
    for hook, on_hook in hooks.items():
        iterators[hook] = _seek(streams[hook], on_hook)
        if on_hook[0].sae is None:  # a fresh sweep: the first batch sets each SAE's scale and b_dec
            first = next(iterators[hook], None)
            if first is None:
                raise InvalidInput("activations", f"the stream for {hook} is empty", "give at least one batch")
            for trainer in on_hook:
                trainer.start(first)
            pending[hook] = first
    start_step = lead.step
    data = {hook: s if _stateful(s) else None for hook, s in streams.items()}
    while not lead.finished and lead.step < lead.config.steps:
        if stop():
            return True
        batches = {hook: pending.pop(hook) if hook in pending else next(it, None) for hook, it in iterators.items()}
        if any(x is None for x in batches.values()):
            for trainer in trainers:
                trainer.finished = True  # data exhausted: finish early, honestly reported
            break
        for trainer in trainers:
            trainer.train_batch(batches[trainer.config.hook_point])
        if on_step is not None:
            on_step(lead.step)
        if lead.checkpoint_due():
            if stop():
                return True
            for trainer in trainers:  # every member at the same step
                trainer.checkpoint(data[trainer.config.hook_point])
    for trainer in trainers:
        trainer.finish(checkpoint=False)
    if lead.step > start_step:
        if stop():
            return True
        for trainer in trainers:
            trainer.checkpoint(data[trainer.config.hook_point])
    return False


def _stateful(stream) -> bool:
    return hasattr(stream, "state_dict") and hasattr(stream, "load_state_dict")


def _seek(stream, on_hook: list[Trainer]):
    """An iterator over stream from where the members on it resumed (the start for a fresh sweep)."""
    lead = on_hook[0]
    if lead.sae is None or lead.finished:
        return iter(stream)
    saved = lead.saved_stream_state()
    if saved is not None and _stateful(stream):
        stream.load_state_dict(saved)
        return iter(stream)
    iterator = iter(stream)
    for _ in range(lead.batches_consumed):  # a plain iterator: replay to the position
        next(iterator)
    return iterator
