"""CE-loss recovered and KL divergence of the default training on a causal LM.

    .venv/bin/python benchmarks/bench_causal.py --model MODEL [--steps N] [--profile default]

Runs `training.train(prepare_config({"model": MODEL}))` (the default config: TopK, the middle
layer's residual stream, the profile's sizes; --steps shortens it) in a fresh MISTUDIO_HOME, then
prints the last eval's CE-loss recovered (goal >= 0.9) and KL(clean || spliced) on held-out text,
the three next-token losses and the time. No Redis.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a causal LM: hub id, folder or alias")
    parser.add_argument("--steps", type=int, default=None, help="fewer steps than the profile's default")
    parser.add_argument("--profile", default=os.environ.get("MISTUDIO_PROFILE", "default"))
    args = parser.parse_args()
    os.environ["MISTUDIO_PROFILE"] = args.profile
    os.environ.setdefault("MISTUDIO_HOME", tempfile.mkdtemp(prefix="mistudio-bench-causal-"))

    from mistudio.training import prepare_and_train, prepare_config

    params = {"model": args.model, "device": "cpu"}
    if args.steps is not None:
        params["steps"] = args.steps
    config = prepare_config(params)
    run_dir = tempfile.mkdtemp(prefix="tr_bench_causal_", dir=os.environ["MISTUDIO_HOME"])
    started = time.perf_counter()
    final = prepare_and_train(config, run_dir)
    took = time.perf_counter() - started
    if "ce_loss_recovered" not in final:
        raise SystemExit(f"{args.model} reported no causal metrics: is it a causal LM (with an LM head)?")
    print(f"model {args.model} · {config.architecture} k={config.k} d_sae={config.d_sae} at {config.hook_point} · "
          f"{final['step']} steps of {config.batch_size} ({final['tokens_seen']:,} tokens) in {took:.0f} s")
    print(f"CE-loss recovered {final['ce_loss_recovered']:.4f} (goal >= 0.9) · KL {final['kl_divergence']:.4f} "
          f"nats/token · explained variance {final['explained_variance']:.4f} · L0 {final['l0']:.1f}")
    print(f"next-token CE: clean {final['ce_clean']:.4f} · SAE spliced {final['ce_spliced']:.4f} · "
          f"zero-ablated {final['ce_zero']:.4f}")


if __name__ == "__main__":
    main()
