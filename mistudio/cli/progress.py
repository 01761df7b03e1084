"""Following a job in the terminal: a tqdm bar fed by the job's events."""

from __future__ import annotations

import time

from tqdm import tqdm

from mistudio import events
from mistudio.queue.records import TERMINAL

_SHOWN = ("loss", "explained_variance", "l0", "dead_fraction")


def _phase_fraction(data: dict) -> float | None:
    """How far a preparation phase (tokenizing, caching activations) is, if it says."""
    for done, total in (("phase_done", "phase_total"), ("tokens_done", "tokens_total"), ("contexts_done", "contexts_total"),
                        ("tokens", "max_tokens")):
        if data.get(total):
            return min(1.0, float(data.get(done) or 0) / float(data[total]))
    return None


def follow(job, channel: str, *, unit: str = "step", poll: float = 0.5) -> dict:
    """Draw progress from channel's events until the job ends; return its record."""
    bar = tqdm(total=None, unit=unit, dynamic_ncols=True, leave=True, desc="queued")
    phase = None
    last_check = 0.0
    try:
        with events.Subscription(channel) as sub:
            while True:
                event = sub.get(timeout=poll)
                if event is not None and event.type.endswith(".progress"):
                    data = event.data
                    total = data.get("total_steps") or data.get("total")
                    done = data.get("step", data.get("done"))
                    now_phase = data.get("phase") or "running"
                    if now_phase != phase:  # a new phase: restart the clock so the rate is its own
                        phase = now_phase
                        bar.reset(total=total)
                        bar.set_description(phase)
                    if total and bar.total != total:
                        bar.total = total
                    if done is not None:
                        bar.n = int(done)
                    fraction = _phase_fraction(data) if phase not in ("training", "running") else None
                    if fraction is not None:
                        bar.set_postfix_str(f"{fraction:.0%}", refresh=False)
                    else:
                        metrics = data.get("metrics") or {}
                        shown = {k: f"{metrics[k]:.4g}" for k in _SHOWN if isinstance(metrics.get(k), (int, float))}
                        if shown:
                            bar.set_postfix(shown, refresh=False)
                    bar.refresh()
                elif event is not None and event.terminal:
                    if event.type.endswith(".completed") and bar.total:
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
