"""Static Plotly figures (go.Figure) and plain output bundles: small when saved in a notebook, no widget state."""

from mistudio.views.display import bundle_of, figure_bundle
from mistudio.views.features import FeatureCard, correlation_heatmap, density_histogram, feature_card
from mistudio.views.training import curves_for, decimate, training_curves

__all__ = ["FeatureCard", "bundle_of", "correlation_heatmap", "curves_for", "decimate", "density_histogram",
           "feature_card", "figure_bundle", "training_curves"]
