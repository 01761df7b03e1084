"""Peak memory of SAE training, measured against mistudio.sae.memory.expected_training_peak.

    .venv/bin/python benchmarks/bench_memory.py [--steps 6] [--cases default,gpt2-16x]

Each case trains a Trainer for a few steps on random activations in a fresh process and reports
that process' peak RSS (and, on CUDA, torch's peak allocation), beside the estimate of the SAE
side (parameters, gradients, Adam state, one step, the runtime). Then whether the whole run
fits an 8 GB Jetson-class budget, with the activation store's default shuffle buffer (512 MiB)
and the model's fp32 weights added: the default run (MiniLM-L6, 384 -> 3072, TopK k=32) and a
GPT-2-small-sized SAE (768 -> 12288, 16x). What it measured here is in README.md ("Memory").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASES = {  # name: (d_in, expansion, fp32 bytes of the model's weights)
    "default": (384, 8, 22_700_000 * 4),  # all-MiniLM-L6-v2
    "gpt2-16x": (768, 16, 124_400_000 * 4),  # GPT-2 small
}
JETSON_BYTES = 8 * 2**30
STORE_BYTES = 512 * 2**20  # MISTUDIO_MEMORY_BUDGET's default: the activation store's shuffle buffer

CHILD = r"""
import json, sys, torch
from mistudio.sae import Trainer, TrainingConfig
from mistudio.sae.memory import expected_training_peak, reuse_freed_memory
d_in, expansion, steps, device = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
reuse_freed_memory()  # as the training worker does
cfg = TrainingConfig(hook_point="blocks.0.hook_resid_post", d_in=d_in, expansion_factor=expansion, k=32,
                     batch_size=4096, steps=steps, log_every=steps, checkpoint_every=10**6, device=device)
x = torch.randn(cfg.batch_size, d_in, device=device)
metrics = Trainer(cfg).train([x] * steps)
print(json.dumps({"metrics": metrics, "estimate": expected_training_peak([cfg])}))
"""


def measure(d_in: int, expansion: int, steps: int, device: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(d_in), str(expansion), str(steps), device],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"{'case':<10} {'SAE':>14} {'peak RSS':>10} {'estimate':>10} {'ratio':>6} {'CUDA peak':>10} "
          f"{'+ store + model':>16} {'fits 8 GB':>9}")
    for name in args.cases.split(","):
        d_in, expansion, model_bytes = CASES[name]
        out = measure(d_in, expansion, args.steps, args.device)
        rss, est = out["metrics"]["peak_rss_mb"], out["estimate"]["total"] / 2**20
        cuda = out["metrics"].get("peak_cuda_allocated_mb")
        whole = rss + (STORE_BYTES + model_bytes) / 2**20
        print(f"{name:<10} {d_in:>5} x {d_in * expansion:>6} {rss:>7,.0f} MiB {est:>6,.0f} MiB {rss / est:>6.2f} "
              f"{(f'{cuda:,.0f} MiB') if cuda else '-':>10} {whole:>12,.0f} MiB {'yes' if whole * 2**20 < JETSON_BYTES else 'NO':>9}")


if __name__ == "__main__":
    main()
