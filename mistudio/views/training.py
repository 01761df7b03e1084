"""Training curves: four panels against step, chosen for the SAE's architecture.

Loss (log scale, with a linear/log switch), then L0; architectures that fix L0 at k (TopK,
BatchTopK: `fixed_l0` in mistudio.sae.registry) show the AuxK loss in its place (the dead
latents' reconstruction term: 0 while no latent is dead, which is when the trainer leaves it
out). Then the dead and dense fractions of the dictionary, and explained variance with, for a
causal LM, CE-loss recovered at the eval steps (KL divergence is a value: `causal_text`).
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mistudio.sae import registry


def fixed_l0(architecture: str | None) -> bool:
    """Whether an architecture's L0 is k by construction (the registry says; unknown names: no)."""
    return architecture in registry.names() and registry.get(architecture).fixed_l0


# (metric key, trace name, panel 0..3) in trace order
_L0_CURVES = (
    ("loss", "loss", 0),
    ("l0", "L0", 1),
    ("dead_fraction", "dead", 2),
    ("dense_fraction", "dense", 2),
    ("explained_variance", "explained variance", 3),
    ("ce_loss_recovered", "CE-loss recovered", 3),
)
# Where L0 is k by construction its panel shows the AuxK loss instead; the other curves are the same.
_FIXED_L0_CURVES = tuple(("aux_loss", "AuxK loss", 1) if curve[0] == "l0" else curve for curve in _L0_CURVES)
_TITLES = ("Loss", "L0 (active features per token)", "Dead / dense features (fraction)",
           "Explained variance · CE-loss recovered")

_FIXED_L0_TITLE = "AuxK loss (dead latents; L0 is k)"


def curves_for(architecture: str | None) -> tuple[tuple[str, str, int], ...]:
    """(metric key, trace name, panel) for each trace of this architecture's figure."""
    return _FIXED_L0_CURVES if fixed_l0(architecture) else _L0_CURVES


def metric_value(metrics: dict, key: str, architecture: str | None) -> float | None:
    """The value a curve plots for one progress report (None: no point)."""
    value = metrics.get(key)
    if value is None and key == "aux_loss" and fixed_l0(architecture) and metrics.get("loss") is not None:
        return 0.0  # nothing was dead in that interval: the trainer adds no AuxK term
    return None if value is None else float(value)


def last_eval(history: list[dict]) -> dict | None:
    """The latest report that carries the causal metrics (they are measured at eval steps only)."""
    return next((h for h in reversed(history) if isinstance(h.get("ce_loss_recovered"), (int, float))), None)


def causal_text(metrics: dict | None) -> str | None:
    """'CE-loss recovered 0.93 · KL 0.051 nats (...)' for a report with causal metrics, else None."""
    if not metrics or not isinstance(metrics.get("ce_loss_recovered"), (int, float)):
        return None

    def fmt(key: str) -> str:
        value = metrics.get(key)
        return f"{value:.3g}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"

    return (f"CE-loss recovered {fmt('ce_loss_recovered')} · KL {fmt('kl_divergence')} nats/token "
            f"(next-token CE: clean {fmt('ce_clean')}, SAE spliced in {fmt('ce_spliced')}, "
            f"zero-ablated {fmt('ce_zero')})")


def decimate(xs: list, ys: list, max_points: int) -> tuple[list, list]:
    """Every k-th point (and always the last) so a long curve stays cheap to draw."""
    n = len(xs)
    if n <= max_points:
        return list(xs), list(ys)
    stride = math.ceil(n / max_points)
    idx = list(range(0, n, stride))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return [xs[i] for i in idx], [ys[i] for i in idx]


def set_points(trace, xs: list, ys: list) -> None:
    """A curve's points; with few of them, markers too (one point alone draws no line)."""
    trace.x, trace.y = xs, ys
    trace.mode = "lines+markers" if len(xs) <= 30 else "lines"


def _scale_switch(loss_scale: str) -> list[dict]:
    buttons = [dict(label=label, method="relayout", args=[{"yaxis.type": scale}])
               for label, scale in (("log", "log"), ("linear", "linear"))]
    return [dict(type="buttons", direction="left", showactive=True, active=0 if loss_scale == "log" else 1,
                 buttons=buttons, x=0.44, xanchor="right", y=1.0, yanchor="bottom", pad=dict(t=0, b=2, r=0),
                 font=dict(size=10), bgcolor="#f4f4f4")]


def training_figure(widget: bool = False, title: str | None = None, architecture: str | None = None,
                    loss_scale: str = "log"):
    """An empty 2x2 figure with one trace per curve (a FigureWidget for live views)."""
    curves = curves_for(architecture)
    titles = list(_TITLES)
    if fixed_l0(architecture):
        titles[1] = _FIXED_L0_TITLE
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, horizontal_spacing=0.12, vertical_spacing=0.18)
    colours = {"dead": "#d62728", "dense": "#9467bd", "CE-loss recovered": "#2ca02c"}
    for key, name, panel in curves:
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines", name=name, showlegend=panel in (2, 3),
                                 line=dict(color=colours.get(name)), marker=dict(size=4), legendgroup=name),
                      row=panel // 2 + 1, col=panel % 2 + 1)
    fig.update_layout(height=480, margin=dict(l=50, r=20, t=70 if title else 50, b=40), template="plotly_white",
                      title=title, updatemenus=_scale_switch(loss_scale),
                      legend=dict(orientation="h", x=1.0, xanchor="right", y=0.44, yanchor="bottom",
                                  font=dict(size=10), bgcolor="rgba(255,255,255,0.6)"))
    fig.update_yaxes(type=loss_scale, row=1, col=1)
    fig.update_xaxes(title_text="step", row=2)
    if widget:
        return go.FigureWidget(fig)
    return fig


def training_curves(history: list[dict], max_points: int = 1000, title: str | None = None,
                    architecture: str | None = None, loss_scale: str = "log") -> go.Figure:
    """Static curves from a run's metric history (dicts with 'step' and metric keys)."""
    fig = training_figure(title=title, architecture=architecture, loss_scale=loss_scale)
    for i, (key, _, _) in enumerate(curves_for(architecture)):
        points = [(h["step"], v) for h in history
                  if (v := metric_value(h, key, architecture)) is not None and "step" in h]
        set_points(fig.data[i], *decimate([p[0] for p in points], [p[1] for p in points], max_points))
    return fig


# One colour per sweep member (Plotly's default cycle); the curves of one member share it.
MEMBER_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf")
# The second curve of a shared panel (dense beside dead, CE-loss recovered beside explained variance).
_DASHED = ("dense_fraction", "ce_loss_recovered")


def sweep_figure(labels: list[str], widget: bool = False, title: str | None = None,
                 architecture: str | None = None, loss_scale: str = "log"):
    """The 2x2 training figure for a sweep: the same panels, one line per member in each (its colour,
    its label in the legend; clicking a label hides that member everywhere). Traces are in
    (member, curve) order: trace i * len(curves_for(architecture)) + j is member i's curve j."""
    fig = training_figure(title=title, architecture=architecture, loss_scale=loss_scale)
    curves = curves_for(architecture)
    fig.data = []
    for i, label in enumerate(labels):
        colour = MEMBER_COLOURS[i % len(MEMBER_COLOURS)]
        for j, (key, name, panel) in enumerate(curves):
            fig.add_trace(go.Scatter(x=[], y=[], mode="lines", name=label or f"member {i}", legendgroup=str(i),
                                     showlegend=j == 0, hovertemplate=f"{name}: %{{y:.4g}} at step %{{x}}",
                                     line=dict(color=colour, dash="dot" if key in _DASHED else None),
                                     marker=dict(size=4)),
                          row=panel // 2 + 1, col=panel % 2 + 1)
    fig.update_layout(legend=dict(orientation="v", x=1.02, xanchor="left", y=1.0, yanchor="top",
                                  font=dict(size=10), title=dict(text="member")), margin=dict(r=160))
    if widget:
        return go.FigureWidget(fig)
    return fig


def sweep_curves(histories: list[list[dict]], labels: list[str], max_points: int = 1000, title: str | None = None,
                 architecture: str | None = None, loss_scale: str = "log") -> go.Figure:
    """Static sweep curves from each member's metric history (as training_curves takes one)."""
    fig = sweep_figure(labels, title=title, architecture=architecture, loss_scale=loss_scale)
    curves = curves_for(architecture)
    for i, history in enumerate(histories):
        for j, (key, _, _) in enumerate(curves):
            points = [(h["step"], v) for h in history
                      if (v := metric_value(h, key, architecture)) is not None and "step" in h]
            set_points(fig.data[i * len(curves) + j], *decimate([p[0] for p in points], [p[1] for p in points],
                                                                 max_points))
    return fig
