"""One self-contained HTML report of a training run: any browser opens it offline.

    write_report("tr_abc123")   # -> MISTUDIO_HOME/runs/tr_abc123/report.html

It holds the run's facts, its training curves (metrics.jsonl), the dictionary summary and
feature-density histogram, the co-activation heatmap, and the cards of the most frequent
features. plotly.js is embedded once, inline (no CDN). It reads the run folder directly, so it
needs no Redis; without a feature analysis it says how to make one.
"""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path

import plotly.io as pio
from plotly.offline import get_plotlyjs

from mistudio.views.features import FONT, _fmt, correlation_heatmap, density_histogram, feature_card, summary_html
from mistudio.views.training import training_curves

_CONFIG = {"displayModeBar": False, "responsive": True}


def read_history(run_dir: Path) -> list[dict]:
    """metrics.jsonl as a list of dicts (a torn last line from a live run is skipped)."""
    path = run_dir / "metrics.jsonl"
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def pick_features(table, n: int, dense_threshold: float) -> list[int]:
    """The n most frequent features that are neither dead nor dense (then dense ones, if short)."""
    live = table[table["count"] > 0].sort_values(["density", "feature"], ascending=[False, True])
    normal = live[live["density"] <= dense_threshold]
    chosen = list(normal["feature"][:n]) + list(live[live["density"] > dense_threshold]["feature"])
    return [int(f) for f in chosen[:n]]


def _figure(fig) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, config=_CONFIG)


def _facts(info: dict, history: list[dict]) -> str:
    config = info.get("config") or {}
    last = history[-1] if history else {}
    facts = [
        ("model", info.get("model")), ("hook point", info.get("hook_point")),
        ("SAE", f"{config.get('architecture')} · d_in {config.get('d_in')} · d_sae {config.get('d_sae')}"
                + (f" · k {config['k']}" if config.get("k") else "")),
        ("dataset", info.get("dataset_id")),
        ("training", f"{last.get('step', '-')} steps · {last.get('tokens_seen', 0):,} tokens" if last else "-"),
        ("final", " · ".join(f"{k} {_fmt(last[k])}" for k in ("explained_variance", "l0", "dead_fraction")
                             if isinstance(last.get(k), (int, float))) or "-"),
    ]
    rows = "".join(f"<tr><td style='padding:2px 16px 2px 0;color:#555'>{html.escape(k)}</td>"
                   f"<td style='padding:2px 0'>{html.escape(str(v))}</td></tr>" for k, v in facts)
    return f"<table style='font-size:13px;border-collapse:collapse'>{rows}</table>"


def build_report(run_dir: Path | str, n_features: int = 8, heatmap_size: int = 30) -> str:
    """The report page as a string."""
    from mistudio.features import has_results, load_correlation_matrix, load_feature, load_feature_table, load_summary
    from mistudio.training import read_run_file

    run_dir = Path(run_dir)
    training_id = run_dir.name
    info = read_run_file(run_dir)
    history = read_history(run_dir)
    sections = [f"<h1 style='font-size:22px'>miStudio · {html.escape(training_id)}</h1>", _facts(info, history)]
    if history:
        sections += ["<h2>Training</h2>", _figure(training_curves(history))]
    if has_results(run_dir):
        summary = load_summary(run_dir)
        sections += ["<h2>Dictionary</h2>", summary_html(summary), _figure(density_histogram(summary))]
        if summary.get("correlation_features"):
            k = min(heatmap_size, len(summary["correlation_features"]))
            sections.append(_figure(correlation_heatmap(load_correlation_matrix(run_dir, k))))
        chosen = pick_features(load_feature_table(run_dir), n_features, summary["dense_threshold"])
        if chosen:
            sections.append(f"<h2>The {len(chosen)} most frequent features</h2>")
            sections += [feature_card(load_feature(run_dir, f)).to_html() for f in chosen]
    else:
        sections.append(f"<p><i>No feature analysis yet: run <code>mistudio features {html.escape(training_id)}"
                        f"</code>, then write the report again.</i></p>")
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>miStudio report {html.escape(training_id)}</title>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body style='font-family:{FONT};max-width:1000px;margin:20px auto;padding:0 16px;color:#222'>"
        + "\n".join(sections)
        + f"<p style='color:#888;font-size:11px;margin-top:30px'>written {created} by miStudio</p></body></html>"
    )


def write_report(training_id: str, path: Path | str | None = None, *, n_features: int = 8) -> Path:
    """Write the report of a training run; returns its path (default runs/{training_id}/report.html)."""
    from mistudio.feature_queries import run_dir as find_run

    run_dir = find_run(training_id)
    path = Path(path) if path is not None else run_dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(build_report(run_dir, n_features=n_features), encoding="utf-8")
    tmp.replace(path)
    return path
