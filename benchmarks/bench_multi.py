"""Many SAEs on one activation pass (a sweep) against the same SAEs trained as separate runs.

    .venv/bin/python benchmarks/bench_multi.py [--steps 20] [--members 1,2,4] [--cache-tokens 40000]

1. Training: N TopK SAEs of the default size (384 -> 3072, batch 4096; k = 16, 32, 64, 128) on one
   stream from an on-disk activation cache (sae/multi.py), against N runs of train_and_export,
   each reading the cache itself. Prints wall time, tokens/s per SAE and the sweep's speed-up.
2. Caching: the bundled MiniLM's activations at 3 hook points (layers 1, 3, 5) in one pass of the
   model (build_activation_caches, what a sweep over hook points does) against one pass per hook
   point, over the first --cache-tokens tokens of the offline corpus.
Peak RSS of this process at the end. A private MISTUDIO_HOME (temp folder); no Redis needed.
What it measured here is in README.md ("Many SAEs per activation pass").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ["MISTUDIO_HOME"] = tempfile.mkdtemp(prefix="mistudio-bench-multi-")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mistudio.data.activations import CACHE_FORMAT, CACHE_VERSION, ActivationStore  # noqa: E402
from mistudio.sae import TrainingConfig  # noqa: E402
from mistudio.sae.memory import peak_memory, reuse_freed_memory  # noqa: E402
from mistudio.sae.multi import Member, train_and_export_many  # noqa: E402
from mistudio.sae.run import train_and_export  # noqa: E402

D_IN, D_SAE, BATCH = 384, 3072, 4096
KS = (16, 32, 64, 128)
HOOK = "blocks.3.hook_resid_post"


def synthetic_cache(folder: Path, n_tokens: int) -> Path:
    """An activation cache on disk (the format build_activation_cache writes) of LM-like activations:
    sparse nonnegative mixtures of random directions plus noise."""
    gen = torch.Generator().manual_seed(0)
    dirs = torch.randn(8192, D_IN, generator=gen)
    out = np.lib.format.open_memmap(folder / "activations.npy", mode="w+", dtype=np.float32, shape=(n_tokens, D_IN))
    for start in range(0, n_tokens, BATCH):
        n = min(BATCH, n_tokens - start)
        codes = (torch.rand(n, 8192, generator=gen) < 0.004) * torch.rand(n, 8192, generator=gen)
        out[start:start + n] = (codes @ dirs + 0.1 * torch.randn(n, D_IN, generator=gen)).numpy()
    out.flush()
    (folder / "cache.json").write_text(json.dumps({"format": CACHE_FORMAT, "version": CACHE_VERSION, "hook_point": HOOK,
                                                   "d_in": D_IN, "n_tokens": n_tokens, "dtype": "float32"}))
    return folder


def config(k: int, steps: int) -> TrainingConfig:
    return TrainingConfig(hook_point=HOOK, d_in=D_IN, d_sae=D_SAE, k=k, batch_size=BATCH, steps=steps,
                          log_every=steps, checkpoint_every=10**6, device="cpu")


def training(cache: Path, steps: int, members: list[int], root: Path) -> None:
    print(f"1. training {D_IN} -> {D_SAE} TopK SAEs (k = {', '.join(map(str, KS))}), batch {BATCH}, {steps} steps each")
    print("   (SAE-tokens/s: tokens trained summed over the SAEs, per second of wall time)")
    print(f"{'SAEs':>4} {'separate runs':>14} {'one sweep':>10} {'speed-up':>9} {'SAE-tokens/s: separate':>23} "
          f"{'sweep':>8}")
    train_and_export(config(32, 2), root / "warm-up", ActivationStore.from_cache(cache, BATCH))  # not timed
    for n in members:
        cfgs = [config(k, steps) for k in KS[:n]]
        separate = 0.0
        for i, cfg in enumerate(cfgs):
            start = time.perf_counter()
            train_and_export(cfg, root / f"single-{n}-{i}", ActivationStore.from_cache(cache, BATCH, seed=cfg.seed))
            separate += time.perf_counter() - start
        start = time.perf_counter()
        train_and_export_many([Member(cfg, root / f"sweep-{n}-{i}") for i, cfg in enumerate(cfgs)],
                              {HOOK: ActivationStore.from_cache(cache, BATCH, seed=cfgs[0].seed)})
        sweep = time.perf_counter() - start
        tokens = steps * BATCH
        print(f"{n:>4} {separate:>12.1f} s {sweep:>8.1f} s {separate / sweep:>8.2f}x "
              f"{n * tokens / separate:>27,.0f} {n * tokens / sweep:>8,.0f}")


def caching(n_tokens: int) -> None:
    from mistudio.data.activations import build_activation_cache, build_activation_caches
    from mistudio.data.processed import process_dataset
    from mistudio.models.loading import load_model

    hooks = [f"blocks.{layer}.hook_resid_post" for layer in (1, 3, 5)]
    loaded = load_model(None)
    dataset = process_dataset(None, loaded, None, n_tokens)
    root = Path(os.environ["MISTUDIO_HOME"]) / "caches"
    start = time.perf_counter()
    for hook in hooks:
        build_activation_cache(loaded, hook, dataset, root / "separate" / hook)
    separate = time.perf_counter() - start
    start = time.perf_counter()
    build_activation_caches(loaded, {hook: root / "one-pass" / hook for hook in hooks}, dataset)
    one = time.perf_counter() - start
    tokens = dataset.tokens.n_tokens
    print(f"2. caching MiniLM activations at {len(hooks)} hook points (layers 1, 3, 5), {tokens:,} tokens")
    print(f"   one pass per hook point {separate:.1f} s ({tokens / separate:,.0f} tokens/s); one pass for all "
          f"{one:.1f} s ({tokens / one:,.0f} tokens/s): {separate / one:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--members", default="1,2,4")
    parser.add_argument("--stream-tokens", type=int, default=200_000)
    parser.add_argument("--cache-tokens", type=int, default=40_000)
    args = parser.parse_args()
    reuse_freed_memory()  # as the training worker does
    root = Path(os.environ["MISTUDIO_HOME"])
    try:
        cache = root / "synthetic-cache"
        cache.mkdir()
        training(synthetic_cache(cache, args.stream_tokens), args.steps,
                 [int(n) for n in args.members.split(",")], root / "runs")
        caching(args.cache_tokens)
        print(f"peak RSS of this process: {peak_memory()['peak_rss_mb']:,.0f} MiB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
