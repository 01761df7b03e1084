"""Feature analysis of a trained SAE: statistics, example contexts, logits, correlations.

No Redis in here (the `extract_features` job wraps it; mistudio.feature_queries caches reads).

    from mistudio.features import extract_features, load_summary, load_feature
    extract_features(run_dir, progress=print)        # writes runs/{id}/features/
    load_feature(run_dir, 12)                        # one feature's card data (JSON-ready)
"""

from mistudio.features.extract import extract_features
from mistudio.features.store import (
    has_results,
    load_correlation_matrix,
    load_examples,
    load_feature,
    load_feature_table,
    load_summary,
    results_dir,
)

__all__ = ["extract_features", "has_results", "load_correlation_matrix", "load_examples", "load_feature",
           "load_feature_table", "load_summary", "results_dir"]
