"""Static Plotly figures (go.Figure): small when saved in a notebook, no widget state."""

from mistudio.views.training import TRAINING_METRICS, decimate, training_curves

__all__ = ["TRAINING_METRICS", "decimate", "training_curves"]
from mistudio.views.features import FeatureCard, correlation_heatmap, density_histogram, feature_card  # noqa: E402

__all__ += ["FeatureCard", "correlation_heatmap", "density_histogram", "feature_card"]
