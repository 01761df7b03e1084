"""Plain output bundles (mimetype -> data) for figures, HTML and live widgets.

A display handle updated with a Plotly figure object adds a new output instead of replacing
its own (figures define `_ipython_display_`, which ignores the handle), so widgets show and
update their outputs as raw bundles: `handle.update(figure_bundle(fig), raw=True)`. A figure
bundle is the JSON JupyterLab's Plotly renderer draws, with no widget state and no plotly.js:
a saved notebook keeps it small and shows it again when reopened.
"""

from __future__ import annotations

import html
import json

import plotly.io as pio

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
FIGURE_CONFIG = {"displayModeBar": False, "responsive": True}


def figure_bundle(fig, text: str | None = None) -> dict:
    """A Plotly figure as a plain output (JSON + a text line for viewers without the renderer)."""
    spec = json.loads(pio.to_json(fig, validate=False))
    spec["config"] = dict(FIGURE_CONFIG)
    title = text or (fig.layout.title.text if fig.layout.title and fig.layout.title.text else "")
    return {PLOTLY_MIME: spec, "text/plain": f"<Figure: {title}>"}


def html_bundle(markup: str, text: str) -> dict:
    return {"text/html": markup, "text/plain": text}


def text_bundle(text: str) -> dict:
    return {"text/html": f"<pre style='margin:0'>{html.escape(text)}</pre>", "text/plain": text}


def widget_bundle(widget) -> dict:
    """A live widget's output (what `display(widget)` would publish), so a handle can hold it."""
    bundle = dict(widget._repr_mimebundle_())  # FigureWidget also syncs its pending state here
    bundle.setdefault("text/plain", f"{type(widget).__name__} (live: run the cell to see it)")
    return bundle


def is_figure(obj) -> bool:
    from plotly.basedatatypes import BaseFigure

    return isinstance(obj, BaseFigure)


def bundle_of(obj) -> dict:
    """What a notebook would show for obj, as a bundle (figures as plain JSON, never a widget)."""
    if is_figure(obj):
        return figure_bundle(obj)
    if isinstance(obj, str):
        return text_bundle(obj)
    if hasattr(obj, "_repr_mimebundle_"):
        data = obj._repr_mimebundle_()
        data = data[0] if isinstance(data, tuple) else data
        if data:
            return {"text/plain": repr(obj), **data}
    if hasattr(obj, "_repr_html_"):
        markup = obj._repr_html_()
        if markup:
            return html_bundle(markup, repr(obj))
    return text_bundle(repr(obj))
