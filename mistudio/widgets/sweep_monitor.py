"""SweepMonitor: TrainingMonitor for a sweep (one train_sae job, many SAEs on one activation pass).

The same panel, listening and ending as TrainingMonitor (the progress bar, ETA, tokens/s and
peak memory are the sweep's), with every member's curves in one figure (a colour and a legend
entry per member, so a sweep is compared at a glance) and a table of the members' latest
metrics; at the end, a plain table of each member's final metrics and where its SAE is.
"""

from __future__ import annotations

import html

from mistudio.events import TrainingProgress
from mistudio.sae.sweep import labels
from mistudio.views.training import MEMBER_COLOURS, curves_for, decimate, fixed_l0, set_points, sweep_curves, sweep_figure
from mistudio.widgets.monitor import TrainingMonitor, _fmt

_COLUMNS = ("explained_variance", "ce_loss_recovered", "l0", "dead_fraction", "loss", "mse")


class SweepMonitor(TrainingMonitor):
    def __init__(self, job, **kw):
        super().__init__(job, **kw)
        members = (self.job.record().get("params") or {}).get("sweep") or []
        architectures = {m.get("architecture") for m in members}
        # One figure for all: L0 panels unless every member fixes L0 at k (then the AuxK loss).
        self.architecture = next(iter(architectures)) if len(architectures) == 1 else None
        if self.architecture is None and all(fixed_l0(a) for a in architectures):
            self.architecture = "topk"
        self.labels = [name or f"member {i}" for i, name in enumerate(labels(members))]
        self.curve_keys = [key for key, _, _ in curves_for(self.architecture)]
        self.member_curves = [{k: ([], []) for k in self.curve_keys} for _ in self.labels]
        self.member_metrics: list[dict] = [{} for _ in self.labels]
        self.member_ids = [f"{self.job.id}-m{i}" for i in range(len(self.labels))]
        self.figure = sweep_figure(self.labels, widget=True, architecture=self.architecture)
        self.title.value = f"<b>Sweep {html.escape(self.job.id)}</b> · {len(self.labels)} SAEs on one activation pass"

    def apply(self, event) -> None:
        super().apply(event)
        value = event.payload
        if isinstance(value, TrainingProgress) and value.phase == "training" and value.members:
            for i, member in enumerate(value.members[:len(self.labels)]):
                metrics = member.get("metrics") or {}
                self.member_metrics[i] = metrics
                self._add_points(metrics, self.member_curves[i])

    def _add_points(self, metrics: dict, curves: dict | None = None) -> None:
        if curves is not None:  # a member's; the sweep's own progress has no curves
            super()._add_points(metrics, curves)

    def members_table(self, rows: list[dict], final: bool = False) -> str:
        shown = [c for c in _COLUMNS if any(c in r for r in rows)]
        head = "".join(f"<th style='text-align:right;padding:0 8px'>{html.escape(c)}</th>" for c in shown)
        body = []
        for i, metrics in enumerate(rows):
            colour = MEMBER_COLOURS[i % len(MEMBER_COLOURS)]
            cells = "".join(f"<td style='text-align:right;padding:0 8px'>{_fmt(metrics[c]) if c in metrics else '-'}"
                            "</td>" for c in shown)
            where = (f"<td style='padding:0 8px'><code>{html.escape(self.member_ids[i])}</code></td>" if final else "")
            body.append(f"<tr><td style='padding:0 8px;text-align:left'><span style='color:{colour}'>&#9632;</span> "
                        f"{html.escape(self.labels[i])}</td>{where}{cells}</tr>")
        run = "<th style='text-align:left;padding:0 8px'>run</th>" if final else ""
        return (f"<table style='font-size:12px;border-collapse:collapse'><tr><th style='text-align:left;"
                f"padding:0 8px'>member</th>{run}{head}</tr>{''.join(body)}</table>")

    def refresh(self) -> None:
        super().refresh()
        shared = [(k, self.metrics[k]) for k in ("tokens_per_s", "peak_rss_mb", "peak_cuda_allocated_mb")
                  if k in self.metrics]
        line = " &middot; ".join(f"<span style='color:#555'>{html.escape(k)}</span> <b>{_fmt(v)}</b>" for k, v in shared)
        self.metrics_html.value = (f"<div style='font-size:13px'>{line}</div>" if line else "") + self.members_table(
            self.member_metrics)

    def _draw_curves(self) -> None:
        n = len(self.curve_keys)
        with self.figure.batch_update():
            for i, curves in enumerate(self.member_curves):
                for j, key in enumerate(self.curve_keys):
                    set_points(self.figure.data[i * n + j], *decimate(*curves[key], self.max_points))

    def trace(self, key: str, member: int = 0):
        """The live chart's trace of one member's metric."""
        return self.figure.data[member * len(self.curve_keys) + self.curve_keys.index(key)]

    def member_history(self, member: int) -> list[dict]:
        rows: dict[int, dict] = {}
        for key, (xs, ys) in self.member_curves[member].items():
            for x, y in zip(xs, ys):
                rows.setdefault(x, {"step": x})[key] = y
        return [rows[s] for s in sorted(rows)]

    def summary_html(self) -> str:
        if self.error or not self.final:
            return super().summary_html()
        finals = [m.get("final_metrics") or {} for m in (self.final.members or [])]
        return "<b>Finished.</b><br>" + self.members_table(finals, final=True)

    def static_figure(self):
        scale = self.figure.layout.yaxis.type or "log"
        return sweep_curves([self.member_history(i) for i in range(len(self.labels))], self.labels, self.max_points,
                            title=f"Sweep {self.job.id} ({self.state})", architecture=self.architecture,
                            loss_scale=scale)
