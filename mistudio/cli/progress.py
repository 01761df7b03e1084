"""Following a job in the terminal: a tqdm bar fed by the job's events (their typed values)."""

from __future__ import annotations

import time

from tqdm import tqdm

from mistudio import events
from mistudio.events import FeaturesCompleted, TrainingCompleted, TrainingProgress
from mistudio.events.types import THROTTLED
from mistudio.queue.records import TERMINAL

_SHOWN = ("loss", "explained_variance", "ce_loss_recovered", "kl_divergence", "l0", "dead_fraction")


def _per_member(members: list) -> dict:
    metrics = [m.get("metrics") or {} for m in members]
    return {k: "/".join(f"{m[k]:.3g}" if isinstance(m.get(k), (int, float)) else "-" for m in metrics)
            for k in _SHOWN if any(isinstance(m.get(k), (int, float)) for m in metrics)}


def follow(job, channel: str, *, unit: str = "step", poll: float = 0.5) -> dict:
    """Draw progress from channel's events until the job ends; return its record."""
    bar = tqdm(total=None, unit=unit, dynamic_ncols=True, leave=True, desc="queued")
    phase = None
    last_check = 0.0
    try:
        with events.Subscription(channel) as sub:
            while True:
                event = sub.get(timeout=poll)
                value = event.payload if event is not None else None
                if value is not None and event.type in THROTTLED and value.position().total is not None:
                    position = value.position()  # each progress type says its phase, done and total
                    now_phase = position.phase or "running"
                    if now_phase != phase:  # a new phase: restart the clock so the rate is its own
                        phase = now_phase
                        bar.reset(total=position.total)
                        bar.set_description(phase)
                    training = isinstance(value, TrainingProgress) and value.phase == "training"
                    if training or not isinstance(value, TrainingProgress):
                        if bar.total != position.total:
                            bar.total = position.total
                        bar.n = int(position.done or 0)
                        shown = {k: f"{value.metrics[k]:.4g}" for k in _SHOWN
                                 if isinstance(value.metrics.get(k), (int, float))} if training else {}
                        if training and value.members:  # a sweep: each metric per member, "a/b/c"
                            shown = _per_member(value.members)
                        if shown:
                            bar.set_postfix(shown, refresh=False)
                    else:  # a training's preparation phase: the bar counts steps, the postfix the phase
                        if value.total_steps and bar.total != value.total_steps:
                            bar.total = value.total_steps
                        bar.n = value.step
                        bar.set_postfix_str(f"{position.fraction:.0%}", refresh=False)
                    bar.refresh()
                elif event is not None and event.terminal:
                    if isinstance(event.payload, (TrainingCompleted, FeaturesCompleted)) and bar.total:
                        bar.n = bar.total
                        bar.refresh()
                    return job.wait(timeout=30)
                now = time.monotonic()
                if now - last_check > 2.0:
                    last_check = now
                    record = job.record()
                    if record["state"] in TERMINAL:
                        return record
    finally:
        bar.close()
