"""Following a job in the terminal: a tqdm bar fed by the job's events."""

from __future__ import annotations

import time

from tqdm import tqdm

from mistudio import events
from mistudio.queue.records import TERMINAL


def follow(job, channel: str, *, unit: str = "step", poll: float = 0.5) -> dict:
    """Draw progress from channel's events until the job ends; return its record."""
    bar = tqdm(total=0, unit=unit, dynamic_ncols=True, leave=True)
    last_check = 0.0
    try:
        with events.Subscription(channel) as sub:
            while True:
                event = sub.get(timeout=poll)
                if event is not None:
                    data = event.data
                    total = data.get("total_steps") or data.get("total")
                    done = data.get("step", data.get("done"))
                    if total and bar.total != total:
                        bar.reset(total=total)
                    if done is not None:
                        bar.n = int(done)
                    metrics = data.get("metrics") or {}
                    shown = {k: f"{metrics[k]:.4g}" for k in ("loss", "explained_variance", "l0", "dead_fraction")
                             if isinstance(metrics.get(k), (int, float))}
                    bar.set_description(data.get("phase") or event.type.split(".")[-1])
                    bar.set_postfix(shown, refresh=False)
                    bar.refresh()
                    if event.terminal:
                        return job.wait(timeout=30)
                now = time.monotonic()
                if now - last_check > 2.0:
                    last_check = now
                    record = job.record()
                    if record["state"] in TERMINAL:
                        return record
    finally:
        bar.close()
