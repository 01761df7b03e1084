"""Cache hits against the computations they save, side by side in one run.

    python benchmarks/bench_cache.py [--n 200] [--steps 40] [--expansion-factor 8]

Starts a private embedded Redis (its own MISTUDIO_HOME, rate limits off), trains a small SAE on
the bundled MiniLM (the `ci` profile's corpus), runs the feature extraction once, then measures
each cached read (mistudio.feature_queries: GET + hit counter, JSON decode) against what a miss
computes, on the same data:

- feature statistics: the dictionary summary recomputed from features.parquet, and the extraction
  itself (model forward + SAE encode + aggregation over the held-out tokens: what the statistics
  really cost; measured once);
- model metadata (a hash): the transformers config read and the model built on the meta device;
- one feature's card: parquet reads with row-group filters, vocabulary lookup;
- correlations (top 100): the stored matrix read and sliced;
- baseline: a raw GET of a small key.
The seed expects cache hits 100-1000x faster than the computation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from common import pct, private_redis


def measure(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="samples per measurement")
    parser.add_argument("--steps", type=int, default=40, help="SAE training steps")
    parser.add_argument("--expansion-factor", type=int, default=8)
    args = parser.parse_args()

    os.environ.setdefault("MISTUDIO_PROFILE", "ci")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from mistudio import cache
    from mistudio import feature_queries as q
    from mistudio.features import extract_features, load_correlation_matrix, load_feature, load_feature_table
    from mistudio.features.summary import dictionary_summary
    from mistudio.models.metadata import model_metadata
    from mistudio.redis import keys
    from mistudio.redis.connection import get_client
    from mistudio.settings import get_settings
    from mistudio.training import model_config, prepare_config, train

    with private_redis("cache", rate_limits=False):
        tid = "tr_bench_cache"
        run_dir = get_settings().runs_dir / tid
        config = prepare_config({"steps": args.steps, "expansion_factor": args.expansion_factor, "eval_every": 0,
                                 "device": "cpu"})
        t0 = time.perf_counter()
        train(config, run_dir, evaluate=False)
        print(f"trained {config.architecture} d_sae {config.d_sae} k {config.k}, {args.steps} steps in "
              f"{time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        summary = extract_features(run_dir)
        extraction = time.perf_counter() - t0
        print(f"extraction: {summary['n_tokens']:,} held-out tokens, {summary['total_features']:,} features "
              f"in {extraction:.2f} s")

        client = get_client("cache")
        client.set(keys.PROBE_KEY, '{"total_features": 1}')
        raw = measure(lambda i: client.get(keys.PROBE_KEY), args.n)
        n_tokens = summary["n_tokens"]
        features = list(range(0, summary["total_features"], max(1, summary["total_features"] // 50)))[:50]

        def stats_from_table(i):
            count = torch.tensor(load_feature_table(run_dir, columns=("count",))["count"].to_numpy())
            return dictionary_summary(count, n_tokens)

        def metadata(i):
            return model_metadata(model_config(None)[1])

        cases = [
            ("feature stats (summary from parquet)", stats_from_table, lambda i: q.dictionary_stats(tid)),
            ("model metadata (hash)", metadata, lambda i: q.model_info(None)),
            ("feature card", lambda i: load_feature(run_dir, features[i % len(features)]),
             lambda i: q.feature_card(tid, features[i % len(features)])),
            ("correlations top100", lambda i: load_correlation_matrix(run_dir, min(100, len(summary["correlation_features"]))),
             lambda i: q.correlations(tid, 100)),
        ]
        ms = lambda v: f"{1000 * v:8.3f} ms"  # noqa: E731
        print(f"\n{'raw GET (baseline)':40s} p50 {ms(statistics.median(raw))}  p99 {ms(pct(raw, 99))}")
        hit_stats = None
        for name, compute, cached in cases:
            uncached = measure(compute, max(5, args.n // 10))
            for i in range(len(features)):  # warm every key once (the misses)
                cached(i)
            hits = measure(cached, args.n)
            ratio = statistics.median(uncached) / statistics.median(hits)
            print(f"{name:40s} uncached p50 {ms(statistics.median(uncached))} | hit p50 {ms(statistics.median(hits))}"
                  f"  p99 {ms(pct(hits, 99))} | {ratio:7.0f}x")
            if hit_stats is None:
                hit_stats = statistics.median(hits)
        print(f"{'feature stats (the extraction itself)':40s} uncached      {ms(extraction)} | hit p50 {ms(hit_stats)}"
              f"             | {extraction / hit_stats:7.0f}x")
        print("\nhit rates: " + ", ".join(f"{ns} {cache.hit_rate(ns):.1f} %" for ns in ("features", "model", "api",
                                                                                           "correlations")))
        print("a hit = GET (or HGETALL) + HINCRBY of the hit counter + JSON decode; goal (seed): 100-1000x")


if __name__ == "__main__":
    main()
