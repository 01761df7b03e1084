"""Feature analysis of a trained SAE: statistics, example contexts, logits, correlations, steering.

No Redis in here (the `extract_features` and `steer` jobs wrap it; mistudio.feature_queries caches reads).

    from mistudio.features import extract_features, load_summary, load_feature
    extract_features(run_dir, progress=print)        # writes runs/{id}/features/
    load_feature(run_dir, 12)                        # one feature's card data (JSON-ready)

Names are imported lazily: checking a steering request before it is queued never imports torch.
"""

from __future__ import annotations

from mistudio.lazy import lazy_exports

_EXPORTS = {
    "extract_features": "extract",
    "has_results": "store",
    "load_correlation_matrix": "store",
    "load_examples": "store",
    "load_feature": "store",
    "load_feature_table": "store",
    "load_summary": "store",
    "results_dir": "store",
    "steer": "steering",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
