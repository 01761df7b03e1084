"""What `mistudio jobs` and `mistudio job ID` print: progress as a percentage, a job as a summary."""

from __future__ import annotations

import time

from mistudio.cli.output import clean, duration, when
from mistudio.events import FeaturesProgress, TrainingProgress, progress_of

_PARAMS_SHOWN = 12  # params on the summary; --json has them all


def progress_text(progress: dict | None, state: str) -> str:
    """'100%' once succeeded (the last snapshot is throttled, so it lags the end); else e.g. '51% 500/977'.

    Reads the snapshot through its progress event's definition (events.progress_of); a task that
    writes its own snapshot (the diagnostics' sleep) may give a plain "fraction"."""
    if state == "succeeded":
        return "100%"
    if not progress:
        return "-"
    value = progress_of(progress)
    if value is None:
        fraction = progress.get("fraction")
        return f"{min(1.0, max(0.0, fraction)):.0%}" if isinstance(fraction, (int, float)) else "-"
    position = value.position()
    text = "-" if position.fraction is None else f"{position.fraction:.0%}"
    if isinstance(value, TrainingProgress) and value.phase == "training":
        return f"{text} {value.step}/{value.total_steps}" if value.total_steps else text
    if isinstance(value, (TrainingProgress, FeaturesProgress)) and position.phase:
        return f"{position.phase} {text}"
    return text


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return clean(value, 60)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"


def _pairs(data: dict, limit: int | None = None) -> str:
    items = [(k, v) for k, v in data.items() if v is not None and not isinstance(v, (dict, list))]
    shown = items if limit is None else items[:limit]
    text = "  ".join(f"{clean(k, 40)}={_number(v)}" for k, v in shown)
    if len(shown) < len(items):
        text += f"  (+{len(items) - len(shown)} more: --json)"
    return text or "-"


def _result_lines(result) -> list[tuple[str, str]]:
    if not isinstance(result, dict):
        return [("result", clean(result, 200))]
    lines = []
    metrics = result.get("final_metrics")
    if isinstance(metrics, dict):  # a training: the metrics a researcher looks at first
        first = ("explained_variance", "l0", "dead_fraction", "loss", "mse", "ce_loss_recovered", "kl_divergence",
                 "tokens_per_s", "step")
        ordered = {k: metrics[k] for k in first if k in metrics}
        lines.append(("metrics", _pairs(ordered)))
    for member in result.get("members") or []:  # a sweep: one line per SAE it trained
        if isinstance(member, dict) and isinstance(member.get("final_metrics"), dict):
            shown = {k: member["final_metrics"][k] for k in ("explained_variance", "l0", "dead_fraction", "loss")
                     if k in member["final_metrics"]}
            lines.append((clean(member.get("training_id"), 60), f"{clean(member.get('label'), 80)}  {_pairs(shown)}"))
    scalars = {k: v for k, v in result.items() if k != "final_metrics"}
    if scalars:
        lines.append(("result", _pairs(scalars)))
    return lines


def job_summary(record: dict, progress: dict | None, stored: dict | None, now: float | None = None) -> str:
    """The readable summary of one job: what, state, who ran it, when and how long, progress, outcome."""
    now = time.time() if now is None else now
    state = record["state"]
    created, started, finished = record.get("created_at"), record.get("started_at"), record.get("finished_at")
    attempts = record.get("attempts") or 0
    lines = [
        ("job", f"{clean(record['id'], None)}  ({record['task']} on the {record['queue']} queue, "
                f"priority {record['priority']})"),
        ("state", f"{state}, {attempts} attempt{'s' if attempts != 1 else ''}"
                  + (f", worker {clean(record['worker'], 80)}" if record.get("worker") else "")),
        ("created", when(created)),
    ]
    if started:
        lines.append(("started", f"{when(started)}  (waited {duration(started - created)} in the queue)"
                      if created else when(started)))
    if finished:
        ran = f"  (ran {duration(finished - started)})" if started else ""
        lines.append(("finished", when(finished) + ran))
    elif state == "running" and started:
        lines.append(("running", f"for {duration(now - started)}"))
    elif state == "queued" and created:
        lines.append(("waiting", f"for {duration(now - created)}"))
    lines.append(("progress", progress_text(progress, state)))
    if record.get("note"):
        lines.append(("note", clean(record["note"], 200)))
    if record.get("resume_note"):  # a training delivered again: resumed from a checkpoint, or restarted and why
        lines.append(("resume", clean(record["resume_note"], 400)))
    if record.get("checkpoint_device"):
        lines.append(("run", f"step {record.get('checkpoint_step')} checkpointed by device {record['checkpoint_device']} "
                             f"in {clean(record.get('checkpoint_store') or '?', 200)}"))
    lines.append(("params", _pairs(record.get("params") or {}, _PARAMS_SHOWN)))
    stored = stored or {}
    if stored.get("result") is not None:
        lines += _result_lines(stored["result"])
    error = record.get("error") or stored.get("error")
    if error:
        lines.append(("error", clean(error, None)))
    text = "\n".join(f"{name:<9} {value}" for name, value in lines)
    if stored.get("traceback") and state != "succeeded":
        text += "\n\n" + stored["traceback"].rstrip()  # the worker's, as it was raised
    return text
