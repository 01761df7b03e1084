"""Training curves: loss, L0, dead-feature fraction and explained variance against step."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

# (metric key in progress events, panel title)
TRAINING_METRICS = (
    ("loss", "Loss"),
    ("l0", "L0 (active features per token)"),
    ("dead_fraction", "Dead-feature fraction"),
    ("explained_variance", "Explained variance"),
)


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


def training_figure(widget: bool = False, title: str | None = None):
    """An empty 2x2 figure with one trace per metric (FigureWidget for live views)."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in TRAINING_METRICS],
                        horizontal_spacing=0.12, vertical_spacing=0.18)
    for i, (key, label) in enumerate(TRAINING_METRICS):
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines", name=label, showlegend=False),
                      row=i // 2 + 1, col=i % 2 + 1)
    fig.update_layout(height=460, margin=dict(l=50, r=20, t=60, b=40), template="plotly_white",
                      title=title)
    fig.update_xaxes(title_text="step", row=2)
    if widget:
        return go.FigureWidget(fig)
    return fig


def training_curves(history: list[dict], max_points: int = 1000, title: str | None = None) -> go.Figure:
    """Static curves from a run's metric history (dicts with 'step' and metric keys)."""
    fig = training_figure(title=title)
    for i, (key, _) in enumerate(TRAINING_METRICS):
        points = [(h["step"], h[key]) for h in history if h.get(key) is not None]
        xs, ys = decimate([p[0] for p in points], [p[1] for p in points], max_points)
        fig.data[i].x, fig.data[i].y = xs, ys
    return fig
