"""Feature views: static Plotly figures and self-contained HTML (inline styles, no external CSS or
JS beyond plotly.js), so they look the same in JupyterLab and in a saved HTML file.

- `density_histogram(summary)`: log10 activation frequency across the dictionary.
- `feature_card(card)`: one feature (a FeatureCard: activation histogram titled with its density,
  top contexts and quantile samples with per-token shading, top +/- logits, the ablation effect
  (causal LMs), correlated features).
- `correlation_heatmap(correlations)`: phi between the most frequent features.

Inputs are the plain dicts of mistudio.features / mistudio.feature_queries (JSON-ready).
"""

from __future__ import annotations

import html
import math

import plotly.graph_objects as go
import plotly.io as pio

from mistudio.views.display import FIGURE_CONFIG, figure_bundle, html_bundle

# No quotes inside: these go into single-quoted style attributes.
FONT = "-apple-system, BlinkMacSystemFont, Segoe UI, Roboto, Helvetica, Arial, sans-serif"
MONO = "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"
SHADE = (255, 127, 14)  # token shading (orange), alpha = activation / feature max
POSITIVE, NEGATIVE = (31, 119, 180), (214, 39, 40)


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.{max(1, digits - 1)}e}"


def _layout(fig: go.Figure, height: int, title: str | None = None) -> go.Figure:
    fig.update_layout(template="plotly_white", height=height, title=title, bargap=0.05,
                      margin=dict(l=50, r=20, t=40 if title else 10, b=40), font=dict(family=FONT, size=12))
    return fig


# --- the dictionary ------------------------------------------------------------------------


def density_histogram(summary: dict, title: str | None = None) -> go.Figure:
    """Live features per log10(activation frequency) bin; dead features are counted in the note."""
    hist = summary["frequency_histogram"]
    edges, counts = hist["edges"], hist["counts"]
    nonzero = [i for i, c in enumerate(counts) if c]
    lo, hi = (nonzero[0], nonzero[-1] + 1) if nonzero else (0, len(counts))
    centers = [(edges[i] + edges[i + 1]) / 2 for i in range(lo, hi)]
    fig = go.Figure(go.Bar(x=centers, y=counts[lo:hi], width=[edges[i + 1] - edges[i] for i in range(lo, hi)],
                           marker_color="#1f77b4", name="features",
                           hovertemplate="10^%{x:.2f}: %{y} features<extra></extra>"))
    threshold = summary.get("dense_threshold")
    if threshold:
        fig.add_vline(x=math.log10(threshold), line_dash="dash", line_color="#d62728",
                      annotation_text=f"dense > {threshold:g}", annotation_position="top left")
    fig.update_xaxes(title_text="log10(activation frequency)")
    fig.update_yaxes(title_text="features")
    note = (f"{summary['total_features']:,} features · {hist['dead']:,} dead (never fired, not shown) · "
            f"{summary.get('dense_features', 0):,} dense · mean frequency {_fmt(summary['avg_activation_frequency'])}")
    return _layout(fig, 320, title or f"Feature density<br><sup>{note}</sup>")


def rows_table(rows: list[tuple[str, str]], value_style: str = "") -> str:
    """A two-column key/value table. Every cell is styled inline: JupyterLab's notebook CSS
    right-aligns table cells and fixes column widths, which the report and widgets do not."""
    cell = "text-align:left;vertical-align:top;border:none;background:none"
    cells = "".join(f"<tr style='background:none'><td style='{cell};padding:2px 16px 2px 0;color:#555;white-space:nowrap'>"
                    f"{html.escape(k)}</td><td style='{cell};padding:2px 0;{value_style}'>{html.escape(v)}</td></tr>"
                    for k, v in rows)
    return (f"<table style='font-family:{FONT};font-size:13px;border-collapse:collapse;table-layout:auto;"
            f"width:auto;margin:0'>{cells}</table>")


def summary_html(summary: dict) -> str:
    """The dictionary summary as a small table."""
    rows = [
        ("features", f"{summary['total_features']:,}"),
        ("held-out tokens analysed", f"{summary['n_tokens']:,}"),
        ("dead (never fired)", f"{summary['dead_features']:,} ({100 * summary['dead_fraction']:.1f} %)"),
        (f"dense (fired on > {summary['dense_threshold']:.0%} of tokens)", f"{summary['dense_features']:,}"),
        ("average activation frequency", _fmt(summary["avg_activation_frequency"])),
        ("mean L0 (active features per token)", _fmt(summary.get("mean_l0"))),
    ]
    if summary.get("explained_variance") is not None:  # summaries written before it was measured have none
        rows.append(("explained variance of the held-out tokens", _fmt(summary["explained_variance"])))
    return rows_table(rows, "font-weight:600")


def correlation_heatmap(correlations: dict, title: str | None = None) -> go.Figure:
    """Phi coefficient between the given features (as from feature_queries.correlations)."""
    labels = [f"#{f}" for f in correlations["features"]]
    fig = go.Figure(go.Heatmap(z=correlations["matrix"], x=labels, y=labels, zmin=-1, zmax=1, zmid=0,
                               colorscale="RdBu_r", colorbar=dict(title="phi", thickness=12),
                               hovertemplate="%{y} · %{x}: phi %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", tickangle=-60)
    size = min(760, 260 + 14 * len(labels))
    return _layout(fig, size, title or f"Co-activation (phi) of the {len(labels)} most frequent features")


# --- one feature ---------------------------------------------------------------------------


def log_ticks(lo: float, hi: float) -> list[float]:
    """At least three tick values for a log axis spanning 10^lo..10^hi: the decades, else 1-2-5 or
    every digit per decade, else (a range narrower than one digit step) evenly spaced round values."""
    for mantissas in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0 ** d for d in range(math.floor(lo), math.ceil(hi) + 1) for m in mantissas
                 if lo <= math.log10(m * 10.0 ** d) <= hi]
        if len(ticks) >= 3:
            return ticks
    low, high = 10.0 ** lo, 10.0 ** hi
    rough = (high - low) / 4
    step = min((m * 10.0 ** math.floor(math.log10(rough)) for m in (1, 2, 5, 10)), key=lambda v: abs(v - rough))
    return [round(k * step, 12) for k in range(math.ceil(low / step), math.floor(high / step) + 1)]


def activation_histogram(card: dict) -> go.Figure:
    """Histogram of the feature's non-zero activations (log-spaced bins), titled with its density."""
    hist = card["histogram"]
    edges, counts = hist["edges"], hist["counts"]
    x = [math.log10(math.sqrt(edges[i] * edges[i + 1])) for i in range(len(counts))]
    widths = [math.log10(edges[i + 1] / edges[i]) for i in range(len(counts))]
    fig = go.Figure(go.Bar(x=x, y=counts, width=widths, marker_color="#ff7f0e",
                           customdata=[[edges[i], edges[i + 1]] for i in range(len(counts))],
                           hovertemplate="%{customdata[0]:.3g} to %{customdata[1]:.3g}: %{y}<extra></extra>"))
    if x:
        lo, hi = x[0] - widths[0], x[-1] + widths[-1]
        ticks = log_ticks(lo, hi)
        fig.update_xaxes(tickvals=[math.log10(t) for t in ticks], ticktext=[_fmt(t) for t in ticks], range=[lo, hi])
    fig.update_xaxes(title_text="activation (log scale)")
    fig.update_yaxes(title_text="tokens")
    title = (f"Feature {card['feature']} · density {_fmt(card['density'])} "
             f"({card['count']:,} of {card['n_tokens']:,} tokens)")
    return _layout(fig, 240, title)


def _token_html(text: str, act: float, top: float, peak: bool) -> str:
    shown = text.replace("\n", "↵").replace("\t", "→") or "∅"
    alpha = 0.0 if top <= 0 else max(0.0, min(1.0, act / top))
    style = f"background:rgba({SHADE[0]},{SHADE[1]},{SHADE[2]},{alpha:.2f});border-radius:2px;padding:1px 0"
    if peak:
        style += ";font-weight:700;text-decoration:underline"
    return f"<span title='{html.escape(f'{act:.4g}', quote=True)}' style='{style}'>{html.escape(shown)}</span>"


def context_html(example: dict, top: float) -> str:
    """One example: its tokens shaded by this feature's activation (hover for the value)."""
    return "".join(_token_html(t, a, top, i == example["peak"])
                   for i, (t, a) in enumerate(zip(example["tokens"], example["acts"])))


def _examples_table(examples: list[dict], top: float, label) -> str:
    """One row per example: a narrow label, then the shaded tokens, left-aligned and wrapping.
    Flex rows, not a table: JupyterLab's notebook CSS restyles table cells (right-aligned,
    fixed equal columns), never plain divs, so this looks the same there and in the report."""
    return "".join(
        f"<div style='display:flex;align-items:baseline;gap:10px;padding:2px 0;line-height:1.45;text-align:left'>"
        f"<div style='flex:0 0 auto;min-width:3.5em;color:#666;white-space:nowrap;font-size:12px'>{label(ex)}</div>"
        f"<div style='flex:1 1 auto;min-width:0;font-family:{MONO};font-size:12px;white-space:pre-wrap;"
        f"word-break:break-word;text-align:left'>{context_html(ex, top)}</div></div>" for ex in examples)


def _chips(items: list[dict], colour: tuple[int, int, int]) -> str:
    if not items:
        return ""
    top = max(abs(i["value"]) for i in items) or 1.0
    return "".join(
        f"<span style='display:inline-block;margin:2px;padding:1px 5px;border-radius:3px;font-family:{MONO};"
        f"font-size:12px;white-space:pre;background:rgba({colour[0]},{colour[1]},{colour[2]},"
        f"{0.15 + 0.6 * abs(i['value']) / top:.2f})' title='{i['value']:.4g}'>"
        f"{html.escape(i['token'].replace(chr(10), '↵'))} <small>{i['value']:+.2f}</small></span>" for i in items)


def ablation_html(ablation: dict) -> str:
    """The ablation effect: how much the next-token loss rises without the feature (features/ablation.py)."""
    effect, peak = ablation.get("effect"), ablation.get("peak")
    if effect is None:
        return "<div style='font-size:12px;color:#555'><i>not measured: no top context to ablate it on</i></div>"
    colour = NEGATIVE if effect > 0 else POSITIVE  # red: the model needs it; blue: it was in the way
    window = ablation.get("window")
    span = f"the peak token and the {window} after it" if window else "the peak token"
    at_peak = f"; {peak:+.3g} at the peak token's own prediction" if peak is not None else ""
    return (f"<div style='font-size:12px'><span style='font-family:{MONO};font-weight:700;color:rgb{colour}'>"
            f"{effect:+.3g} nats</span> next-token loss when this feature is removed (its decoder direction "
            f"times its activation subtracted, reconstruction error kept), averaged over the predictions from "
            f"{html.escape(span)} in its top {ablation.get('contexts', 0)} contexts{html.escape(at_peak)}</div>")


def _top_label(ex: dict) -> str:
    delta = ex.get("ablation")
    return f"{ex['value']:.3g}" + (f" · Δ{delta:+.2g}" if delta is not None else "")


def _section(title: str, body: str) -> str:
    return (f"<div style='margin:10px 0 4px 0;font-weight:600;font-size:13px'>{html.escape(title)}</div>"
            f"{body}")


def correlated_chips(correlated: list[dict], href=None) -> str:
    """Co-active features as chips; with href(feature) -> URL or None, a chip is a link."""
    out = []
    for c in correlated:
        style = ("display:inline-block;margin:2px;padding:1px 6px;border-radius:3px;background:#e8ecf8;"
                 "color:#223;font-size:12px;text-decoration:none")
        label = f"#{c['feature']} <small>phi {c['phi']:.2f}</small>"
        title = f"co-active on {c['co_count']} tokens"
        target = href(c["feature"]) if href else None
        if target:
            out.append(f"<a href='{html.escape(target, quote=True)}' style='{style}' title='{title}'>{label}</a>")
        else:
            out.append(f"<span style='{style}' title='{title}'>{label}</span>")
    return "".join(out)


class FeatureCard:
    """One feature's card: `histogram` (a go.Figure) and HTML parts. In a notebook it displays
    as HTML + the figure; `to_html()` gives one block for a static page (needs plotly.js once).
    `correlated` is the co-active features shown (FeatureBrowser makes them buttons);
    `feature_href(feature)` may turn their chips into links (the report links to its own cards)."""

    def __init__(self, card: dict, n_contexts: int = 10, n_correlated: int = 10, feature_href=None):
        self.card = card
        self.feature = card["feature"]
        self.histogram = activation_histogram(card)
        top = card.get("max") or 0.0
        self.header_html = (
            f"<div style='font-family:{FONT};font-size:16px;font-weight:600;margin:4px 0'>Feature {self.feature}</div>"
            f"<div style='font-family:{FONT};font-size:12px;color:#555'>density {_fmt(card['density'])} "
            f"({card['count']:,} of {card['n_tokens']:,} tokens) · mean {_fmt(card['mean'])} · max {_fmt(card['max'])}"
            f"</div>")
        parts = []
        if card["top_contexts"]:
            parts.append(_section(f"Top activating contexts ({min(n_contexts, len(card['top_contexts']))})",
                                  _examples_table(card["top_contexts"][:n_contexts], top, _top_label)))
        else:
            parts.append(_section("Top activating contexts", "<i>never fired on the held-out tokens (dead)</i>"))
        if card["quantile_samples"]:
            parts.append(_section("Samples across the activation range", _examples_table(
                card["quantile_samples"], top, lambda ex: f"q{round(100 * ex['quantile'])} · {ex['value']:.3g}")))
        if card.get("logits"):
            parts.append(_section("Promoted tokens (W_dec · W_U)", _chips(card["logits"]["positive"], POSITIVE)))
            parts.append(_section("Suppressed tokens", _chips(card["logits"]["negative"], NEGATIVE)))
        if card.get("ablation"):
            parts.append(_section("Ablation effect (causal)", ablation_html(card["ablation"])))
        self.body_html = "".join(parts)
        self.correlated = list(card.get("correlated") or [])[:n_correlated]
        self.correlated_html = (_section("Co-active features", correlated_chips(self.correlated, feature_href))
                                if self.correlated else "")

    def _wrap(self, inner: str, anchor: bool = False) -> str:
        ident = f" id='feature-{self.feature}'" if anchor else ""
        return (f"<div{ident} style='font-family:{FONT};max-width:960px;border:1px solid #ddd;border-radius:6px;"
                f"padding:10px 14px;margin:10px 0;text-align:left'>{inner}</div>")

    def to_html(self, include_plotlyjs: bool = False, anchor: bool = False) -> str:
        """The card as one block; anchor=True gives it id='feature-N' for links within a page."""
        figure = pio.to_html(self.histogram, full_html=False, include_plotlyjs=include_plotlyjs, config=FIGURE_CONFIG)
        body = self.body_html + self.correlated_html
        return self._wrap(self.header_html + figure + f"<div style='font-family:{FONT}'>{body}</div>", anchor)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(html_bundle(self._wrap(self.header_html), f"Feature {self.feature}"), raw=True)
        display(figure_bundle(self.histogram), raw=True)
        display(html_bundle(self._wrap(self.body_html + self.correlated_html), f"Feature {self.feature}: contexts"),
                raw=True)


def feature_card(card: dict, n_contexts: int = 10, feature_href=None) -> FeatureCard:
    return FeatureCard(card, n_contexts=n_contexts, feature_href=feature_href)
