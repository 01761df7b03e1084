"""One self-contained HTML report of a training run: any browser opens it offline.

    write_report("tr_abc123")   # -> MISTUDIO_HOME/runs/tr_abc123/report.html

It holds the run's facts and outcome (finished, or where and why it stopped), its training
curves (metrics.jsonl) and, for a causal LM, CE-loss recovered and KL divergence, the dictionary summary and feature-density histogram, the co-activation
heatmap, the cards of the most frequent features that are not dense, and the dense ones listed
apart. plotly.js is embedded once, inline (no CDN). It reads the run folder, so it works without
Redis; only for a run that did not finish does it ask the job record (if Redis answers) why.
Without a feature analysis it says how to make one.
"""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path

import plotly.io as pio
from plotly.offline import get_plotlyjs

from mistudio.features import has_results, load_correlation_matrix, load_feature, load_feature_table, load_summary
from mistudio.jobs import Job
from mistudio.run_location import locate
from mistudio.runs import RunFolder
from mistudio.views.display import FIGURE_CONFIG
from mistudio.views.features import (
    FONT,
    _fmt,
    correlation_heatmap,
    density_histogram,
    feature_card,
    rows_table,
    summary_html,
)
from mistudio.views.training import causal_text, last_eval, training_curves


def read_history(run_dir: Path) -> list[dict]:
    """metrics.jsonl as a list of dicts (a torn last line from a live run is skipped)."""
    path = RunFolder(run_dir).metrics
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def pick_features(table, n: int, dense_threshold: float) -> tuple[list[int], list[dict]]:
    """(the n most frequent live features that are not dense, every dense feature as
    {feature, density}), both by density, highest first."""
    live = table[table["count"] > 0].sort_values(["density", "feature"], ascending=[False, True])
    normal = live[live["density"] <= dense_threshold]
    dense = live[live["density"] > dense_threshold]
    return ([int(f) for f in normal["feature"][:n]],
            [{"feature": int(f), "density": float(d)} for f, d in zip(dense["feature"], dense["density"])])


def _figure(fig) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, config=FIGURE_CONFIG)


_ENDED = {
    "cancelled": "cancelled", "failed": "failed", "dead": "stopped: its worker died too often (dead letter)",
    "running": "still running", "queued": "waiting to resume",
}


def run_outcome(run_dir: Path, info: dict, history: list[dict], job_state: str | None = None) -> dict:
    """What happened to the run: finished (the SAE was exported) or where it stopped, and why
    when the job record says (job_state: its state, if known)."""
    total = int((info.get("config") or {}).get("steps") or 0)
    step = int(history[-1].get("step", 0)) if history else 0
    of = f"step {step:,} of {total:,}" + (f" ({100 * step / total:.0f} %)" if total else "")
    if RunFolder(run_dir).export_config.is_file():
        return {"finished": True, "step": step, "total": total, "text": f"finished: {step:,} steps"}
    why = _ENDED.get(job_state or "", "stopped before the end (cancelled or interrupted)")
    return {"finished": False, "step": step, "total": total, "state": job_state,
            "text": f"{why} at {of}: no SAE was exported" if history else f"{why} before the first logged step"}


def _facts(info: dict, history: list[dict], outcome: dict) -> str:
    config = info.get("config") or {}
    last = history[-1] if history else {}
    metrics = " · ".join(f"{k} {_fmt(last[k])}" for k in ("explained_variance", "l0", "dead_fraction")
                         if isinstance(last.get(k), (int, float))) or "-"
    steps = f"{outcome['step']:,} of {outcome['total']:,} steps" if outcome["total"] else f"{outcome['step']:,} steps"
    facts = [
        ("model", info.get("model")), ("hook point", info.get("hook_point")),
        ("SAE", f"{config.get('architecture')} · d_in {config.get('d_in')} · d_sae {config.get('d_sae')}"
                + (f" · k {config['k']}" if config.get("k") else "")),
        ("dataset", info.get("dataset_id")),
        ("outcome", outcome["text"]),
        ("training", f"{steps} · {last.get('tokens_seen', 0):,} tokens" if last else "-"),
        ("final" if outcome["finished"] else f"last logged (step {outcome['step']:,})", metrics),
    ]
    measured = last_eval(history)
    if measured is not None:  # a causal LM: next-token metrics on held-out text, at the eval steps
        final = outcome["finished"] and measured is last
        facts.append(("causal (held-out)" if final else f"causal (step {measured.get('step', 0):,})",
                      causal_text(measured)))
    return rows_table([(k, str(v)) for k, v in facts])


def _stopped_banner(outcome: dict) -> str:
    return ("<p style='background:#fff4e5;border-left:4px solid #ff7f0e;padding:8px 12px;font-size:14px'>"
            f"This run did not finish: {html.escape(outcome['text'])}. The curves end where it stopped"
            " and its metrics are the last logged, not final ones.</p>")


def _features_sections(run_dir: Path, summary: dict, n_features: int) -> list[str]:
    chosen, dense = pick_features(load_feature_table(run_dir), n_features, summary["dense_threshold"])
    threshold = f"{summary['dense_threshold']:.0%}"
    out = []
    if chosen:
        note = (f"Ranked by activation frequency among the live features that fire on at most {threshold} of the "
                f"held-out tokens. ")
        note += (f"The {len(dense):,} dense features (more than {threshold}) are listed below the cards instead: they "
                 "fire on almost anything, so their top contexts say little." if dense else "No feature is dense.")
        out += [f"<h2>The {len(chosen)} most frequent features (not dense)</h2>",
                f"<p style='color:#555;font-size:13px'>{html.escape(note)}</p>"]
        shown = set(chosen)
        out += [feature_card(load_feature(run_dir, f), feature_href=lambda g: f"#feature-{g}" if g in shown else None)
                .to_html(anchor=True) for f in chosen]
    if dense:
        chips = "".join(f"<span style='display:inline-block;margin:2px;padding:1px 6px;border-radius:3px;"
                        f"background:#f3e8f8;font-size:12px'>#{d['feature']} <small>{100 * d['density']:.0f} %</small>"
                        f"</span>" for d in dense)
        out += [f"<h2>Dense features ({len(dense):,})</h2>",
                f"<p style='color:#555;font-size:13px'>Active on more than {threshold} of the held-out tokens "
                f"(share of tokens shown). Open them in the FeatureBrowser (order \"density\").</p><div>{chips}</div>"]
    return out


def build_report(run_dir: Path | str, n_features: int = 8, heatmap_size: int = 30, job_state: str | None = None) -> str:
    """The report page as a string (job_state: the training job's state, if known)."""
    run_dir = Path(run_dir)
    training_id = run_dir.name
    info = RunFolder(run_dir).read_info()
    history = read_history(run_dir)
    outcome = run_outcome(run_dir, info, history, job_state)
    sections = [f"<h1 style='font-size:22px'>miStudio · {html.escape(training_id)}</h1>"]
    if not outcome["finished"]:
        sections.append(_stopped_banner(outcome))
    sections.append(_facts(info, history, outcome))
    if history:
        architecture = (info.get("config") or {}).get("architecture")
        sections += ["<h2>Training</h2>", _figure(training_curves(history, architecture=architecture))]
    if has_results(run_dir):
        summary = load_summary(run_dir)
        sections += ["<h2>Dictionary</h2>", summary_html(summary), _figure(density_histogram(summary))]
        if summary.get("correlation_features"):
            k = min(heatmap_size, len(summary["correlation_features"]))
            sections.append(_figure(correlation_heatmap(load_correlation_matrix(run_dir, k))))
        sections += _features_sections(run_dir, summary, n_features)
    elif outcome["finished"]:
        sections.append(f"<p><i>No feature analysis yet: run <code>mistudio features {html.escape(training_id)}"
                        f"</code>, then write the report again.</i></p>")
    else:
        sections.append("<p><i>No feature analysis: it needs an exported SAE. Retry the run "
                        f"(<code>mistudio retry {html.escape(training_id)}</code>: it resumes from its last "
                        "checkpoint), then extract features.</i></p>")
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>miStudio report {html.escape(training_id)}</title>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body style='font-family:{FONT};max-width:1000px;margin:20px auto;padding:0 16px;color:#222'>"
        + "\n".join(sections)
        + f"<p style='color:#888;font-size:11px;margin-top:30px'>written {created} by miStudio</p></body></html>"
    )


def _job_state(training_id: str) -> str | None:
    """The training job's state from its record, if Redis has one (the report works without)."""
    try:
        return Job(training_id).record()["state"]
    except Exception:  # no Redis, or the record has expired: the folder alone tells the story
        return None


def write_report(training_id: str, path: Path | str | None = None, *, n_features: int = 8) -> Path:
    """Write the report of a training run; returns its path (default runs/{training_id}/report.html)."""

    folder = locate(training_id)  # not on this device: the error names the one that has it
    run_dir = folder.path
    path = Path(path) if path is not None else folder.report
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    finished = folder.export_config.is_file()
    state = None if finished else _job_state(training_id)
    tmp.write_text(build_report(run_dir, n_features=n_features, job_state=state), encoding="utf-8")
    tmp.replace(path)
    return path
