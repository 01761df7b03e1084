"""Training throughput of the SAE engine on this machine, against its own matmul roofline.

    .venv/bin/python benchmarks/bench_sae_train.py [--steps 8] [--repeats 3] [--archs topk-dense,topk-sparse,...]
                                                   [--no-malloc-tuning]

384 x 3072 SAE, batch 4096, fp32, CPU (the setup of README.md's "Measured" table). A dense SAE step costs
about 12 * d_in * d_sae FLOPs per token (encoder and decoder: forward, and two gradient
matmuls each), so roofline tokens/s = matmul FLOP/s / (12 * d_in * d_sae), with the FLOP/s
measured here on a [4096,384] x [384,3072] matmul right before and after every timed run
(other processes on a shared machine move it by 2x), and each run's ratio uses the mean
of its two measurements. Figures are medians over repeats. Each timed step
is a full Trainer step: forward, backward, decoder-gradient projection, Adam, renormalise,
metrics. The sparse TopK path is not bound by the roofline: it skips most of the dense work.
What it measured here is in README.md's "Measured" table. Like the training worker (train_and_export),
the benchmark first calls mistudio.sae.memory.reuse_freed_memory(); --no-malloc-tuning shows the cost
of glibc's default of unmapping every freed 50 MB block.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mistudio.sae import Trainer, TrainingConfig
from mistudio.sae.memory import reuse_freed_memory

D_IN, D_SAE, BATCH, K = 384, 3072, 4096, 32
RUNS = {
    "topk-dense": dict(architecture="topk", k=K, sparse_kernels=False),
    "topk-sparse": dict(architecture="topk", k=K, sparse_kernels=True),
    "batchtopk-sparse": dict(architecture="batchtopk", k=K, sparse_kernels=True),
    "relu": dict(architecture="relu", l1_coefficient=5.0),
    "jumprelu": dict(architecture="jumprelu", l0_coefficient=1.0),
}


def matmul_flops(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, n: int = 5) -> float:
    """Median FLOP/s of the encoder-shaped matmul (into a reused output: no allocation cost)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * BATCH * D_IN * D_SAE / statistics.median(times)


def activations(n: int) -> list[torch.Tensor]:
    """Sparse nonnegative mixtures of random directions (LM-like: low-rank-ish, heavy-tailed norms)."""
    gen = torch.Generator().manual_seed(0)
    dirs = torch.randn(8192, D_IN, generator=gen)
    out = []
    for _ in range(n):
        codes = (torch.rand(BATCH, 8192, generator=gen) < 0.004) * torch.rand(BATCH, 8192, generator=gen)
        out.append(codes @ dirs + 0.1 * torch.randn(BATCH, D_IN, generator=gen))
    return out


def tokens_per_s(run: dict, batches: list[torch.Tensor], steps: int, warmup: int = 2) -> tuple[float, dict]:
    cfg = TrainingConfig(
        hook_point="blocks.3.hook_resid_post", d_sae=D_SAE, batch_size=BATCH, steps=warmup + steps,
        lr=4e-4, log_every=10**6, checkpoint_every=10**6, device="cpu", dead_window_tokens=BATCH * 4, **run,
    )
    stamps = []

    def feed():
        for i in range(warmup + steps):
            stamps.append(time.perf_counter())
            yield batches[i % len(batches)]

    metrics = Trainer(cfg).train(feed())
    end = time.perf_counter()
    return steps * BATCH / (end - stamps[warmup]), metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--archs", default=",".join(RUNS))
    parser.add_argument("--no-malloc-tuning", action="store_true")
    args = parser.parse_args()
    tuned = False if args.no_malloc_tuning else reuse_freed_memory()
    batches = activations(4)
    a, b, out = torch.randn(BATCH, D_IN), torch.randn(D_IN, D_SAE), torch.empty(BATCH, D_SAE)
    matmul_flops(a, b, out, 3)  # warm up
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; SAE {D_IN}x{D_SAE}, batch {BATCH}, fp32, "
          f"k={K}; malloc tuning {'on' if tuned else 'off'}")
    all_flops = []
    for name in args.archs.split(","):
        speeds, ratios, flops_seen = [], [], []
        for _ in range(args.repeats):
            before = matmul_flops(a, b, out)
            speed, metrics = tokens_per_s(RUNS[name], batches, args.steps)
            after = matmul_flops(a, b, out)
            roofline = (before + after) / 2 / (12 * D_IN * D_SAE)
            speeds.append(speed)
            ratios.append(speed / roofline)
            flops_seen += [before, after]
        all_flops += flops_seen
        print(f"{name:17s} {statistics.median(speeds):8,.0f} tokens/s = {statistics.median(ratios):4.2f} x roofline"
              f" (best {max(ratios):4.2f})   (runs {', '.join(f'{s:,.0f}' for s in speeds)}; "
              f"matmul {min(flops_seen) / 1e9:.0f}-{max(flops_seen) / 1e9:.0f} GFLOP/s)")
    flops = statistics.median(all_flops)
    print(f"matmul [4096,384]x[384,3072] median {flops / 1e9:.0f} GFLOP/s -> roofline "
          f"{flops / (12 * D_IN * D_SAE):,.0f} tokens/s (12*d_in*d_sae FLOPs per token)")


if __name__ == "__main__":
    main()
