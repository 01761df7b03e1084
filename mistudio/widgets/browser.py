"""FeatureBrowser: pick a feature of a trained SAE and see its card.

    FeatureBrowser("tr_abc123")                      # by index
    FeatureBrowser("tr_abc123", order="density")     # most frequent first, opened at rank 0

Choose the order (feature index, density, max activation), then move through it with the slider or
the arrows, or type a feature index; it opens at the first feature of the order unless given one.
"steer with this feature" puts the shown feature into a SteeringPanel: the one passed as
`steering=`, or one made under the card on first use. A co-active feature's button, or a cell of the
co-activation heatmap (an accordion under the card, drawn when opened), opens that feature. Every
read goes through the Redis cache (mistudio.feature_queries): the dictionary stats and orderings
once, each card on first view, so going back to a feature is a cache hit. Everything runs in widget
callbacks on the kernel's thread; nothing is polled. The histogram goes into an Output as a plain
Plotly figure (small when the notebook is saved); only the heatmap is a FigureWidget (for its
clicks).
"""

from __future__ import annotations

import html

import ipywidgets as W
import plotly.graph_objects as go
from IPython.display import display

from mistudio import feature_queries as queries
from mistudio.views.display import figure_bundle
from mistudio.views.features import FeatureCard, _fmt, correlation_heatmap
from mistudio.widgets.steering import SteeringPanel

ORDERS = (("feature index", "index"), ("density (highest first)", "density"), ("max activation (highest first)", "max"))


def figure_output(fig) -> dict:
    """A display_data output holding a Plotly figure (JupyterLab's Plotly renderer draws it)."""
    return {"output_type": "display_data", "metadata": {}, "data": figure_bundle(fig)}


class FeatureBrowser:
    def __init__(self, training_id: str, feature: int | None = None, order: str = "index", n_contexts: int = 10,
                 heatmap: int = 30, steering=None):
        self.training_id = training_id
        self.steering = steering  # the SteeringPanel "steer with this feature" feeds
        self.n_contexts = n_contexts
        self.stats = queries.dictionary_stats(training_id)
        self.n_features = self.stats["total_features"]
        self.ranking: list[int] = []
        self._rank_of: dict[int, int] = {}
        self.card: FeatureCard | None = None
        self.error: str | None = None
        self._syncing = False

        last = max(0, self.n_features - 1)
        self.order = W.Dropdown(options=ORDERS, value=order, description="order", layout=W.Layout(width="300px"))
        self.rank = W.IntSlider(value=0, min=0, max=last, description="rank", continuous_update=False,
                                layout=W.Layout(width="420px"))
        self.prev_button = W.Button(icon="chevron-left", tooltip="previous", layout=W.Layout(width="36px"))
        self.next_button = W.Button(icon="chevron-right", tooltip="next", layout=W.Layout(width="36px"))
        self.index = W.BoundedIntText(value=0, min=0, max=last, description="feature", layout=W.Layout(width="170px"))
        s = self.stats
        self.title = W.HTML(
            f"<b>Features of {html.escape(training_id)}</b> <span style='color:#666'>· {s['total_features']:,} "
            f"features · {s['dead_features']:,} dead · mean frequency {_fmt(s['avg_activation_frequency'])} · "
            f"{s['n_tokens']:,} held-out tokens</span>")
        self.header = W.HTML()
        self.steer_button = W.Button(description="steer with this feature", icon="sliders",
                                     tooltip="add this feature to a SteeringPanel", layout=W.Layout(width="auto"))
        self.steer_button.on_click(lambda _: self.steer_with())
        self.steer_box = W.VBox()
        self.figure = W.Output()
        self.body = W.HTML()
        self.correlated = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.heatmap_size = min(heatmap, len(s.get("correlation_features") or []))
        self.heatmap: go.FigureWidget | None = None
        self.heatmap_box = W.Accordion(children=[W.VBox()], selected_index=None)
        self.heatmap_box.set_title(0, f"Co-activation of the {self.heatmap_size} most frequent features "
                                      "(click a cell to open its feature)")
        self.heatmap_box.observe(lambda change: self._draw_heatmap() if change["new"] == 0 else None,
                                 names="selected_index")
        parts = [self.title, W.HBox([self.order, self.index]), W.HBox([self.prev_button, self.rank, self.next_button]),
                 self.header, self.steer_button, self.figure, self.body, self.correlated]
        self.widget = W.VBox(parts + ([self.heatmap_box] if self.heatmap_size else []) + [self.steer_box])

        self.order.observe(lambda change: self._set_order(change["new"]), names="value")
        self.rank.observe(lambda change: self._at_rank(change["new"]), names="value")
        self.index.observe(lambda change: None if self._syncing else self.show(change["new"]), names="value")
        self.prev_button.on_click(lambda _: self.step(-1))
        self.next_button.on_click(lambda _: self.step(+1))
        self._set_order(order, feature=feature)

    # --- navigation --------------------------------------------------------------------

    def _set_order(self, order: str, feature: int | None = None) -> None:
        """Rank features by order; show `feature`, or else the first of the order (rank 0)."""
        self.ranking = queries.ranking(self.training_id, order)
        self._rank_of = {f: r for r, f in enumerate(self.ranking)}
        if feature is None:
            feature = self.ranking[0] if self.ranking else 0
        self.show(feature)

    def _at_rank(self, rank: int) -> None:
        if not self._syncing and 0 <= rank < len(self.ranking):
            self.show(self.ranking[rank])

    def step(self, delta: int) -> None:
        self.rank.value = max(self.rank.min, min(self.rank.max, self.rank.value + delta))

    @property
    def feature(self) -> int | None:
        return None if self.card is None else self.card.feature

    def show(self, feature: int) -> None:
        """Show one feature's card (read through the cache) and put the controls on it."""
        feature = int(feature)
        try:
            data = queries.feature_card(self.training_id, feature)
        except Exception as exc:  # shown, not raised: a widget callback has nowhere to raise to
            self.error = str(exc)
            self.header.value = f"<span style='color:#d62728'>{html.escape(self.error)}</span>"
            return
        self.error = None
        self.card = FeatureCard(data, n_contexts=self.n_contexts)
        self._syncing = True
        try:
            self.index.value = feature
            self.rank.value = self._rank_of.get(feature, 0)
        finally:
            self._syncing = False
        self.header.value = self.card.header_html
        self.figure.outputs = (figure_output(self.card.histogram),)
        self.body.value = self.card.body_html
        self.correlated.children = self._correlated_buttons()

    def _correlated_buttons(self) -> list:
        if not self.card.correlated:
            return []
        buttons = [W.HTML("<b style='font-size:13px'>Co-active features</b>&nbsp;",
                          layout=W.Layout(width="100%"))]
        for c in self.card.correlated:
            button = W.Button(description=f"#{c['feature']}  phi {c['phi']:.2f}", tooltip=f"open feature "
                              f"{c['feature']} (co-active on {c['co_count']} tokens)", layout=W.Layout(width="auto"))
            button.on_click(lambda _, f=int(c["feature"]): self.show(f))
            buttons.append(button)
        return buttons

    def steer_with(self, strength: float = 4.0):
        """Add the shown feature to the steering panel (made here, under the card, on first use)."""
        if self.feature is None:
            return None
        if self.steering is None:
            self.steering = SteeringPanel(self.training_id, n_features=self.n_features)
            self.steer_box.children = (self.steering.widget,)
        self.steering.add_feature(self.feature, strength)
        return self.steering

    # --- the heatmap -------------------------------------------------------------------

    def _draw_heatmap(self) -> None:
        if self.heatmap is not None:
            return
        self.heatmap = go.FigureWidget(correlation_heatmap(queries.correlations(self.training_id, k=self.heatmap_size)))
        self.heatmap.data[0].on_click(lambda trace, points, state: self.open_cell(points.xs))
        self.heatmap_box.children = [self.heatmap]

    def open_cell(self, xs) -> None:
        """A heatmap click: open the feature of the clicked column (labels are '#N')."""
        if xs:
            self.show(int(str(xs[0]).lstrip("#")))

    def _ipython_display_(self) -> None:
        display(self.widget)
