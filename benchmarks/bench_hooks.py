"""Activation extraction speed: forward hooks vs the plain forward pass of the same model, same run.

    .venv/bin/python benchmarks/bench_hooks.py [--model minilm] [--contexts 32] [--repeats 3]

Modes, on the same packed stdlib contexts, run round-robin so machine load hits them alike:
  plain               model forward, no hooks (the baseline)
  hooks, full pass    capture blocks.{mid}.hook_resid_post and run the whole model (the hook's overhead)
  hooks, early stop   capture blocks.{mid}.hook_resid_post and stop after that block
  hooks, last layer   capture the last block's resid_post with early stop (all blocks still run)
Each line prints tokens/s (median of the repeats) and the ratio to the baseline (>1 is faster).
Goal: hook overhead <= 5% (full-pass ratio >= 0.95).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mistudio.data.corpora import iter_documents
from mistudio.data.packing import pack_documents
from mistudio.models import capture_activations, load_model
from mistudio.models.hooks import run_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--contexts", type=int, default=32)
    parser.add_argument("--context-length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16, help="contexts per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    loaded = load_model(args.model)
    model = loaded.model
    n_layers = loaded.metadata["n_layers"]
    mid, last = f"blocks.{n_layers // 2}.hook_resid_post", f"blocks.{n_layers - 1}.hook_resid_post"
    tokens, _ = pack_documents(
        iter_documents(), loaded.tokenizer, args.context_length, args.contexts * args.context_length
    )
    batches = [
        (tokens.input_ids[i : i + args.batch], tokens.attention_mask[i : i + args.batch])
        for i in range(0, tokens.n_contexts, args.batch)
    ]
    n_tokens = tokens.input_ids.numel()

    def plain():
        with torch.no_grad():
            for ids, mask in batches:
                run_model(model, ids, mask)

    def hooked(point: str, stop_early: bool):
        def run():
            for ids, mask in batches:
                capture_activations(model, [point], ids, mask, stop_early=stop_early)

        return run

    modes = {
        "plain forward (baseline)": plain,
        f"hooks, full pass    ({mid})": hooked(mid, False),
        f"hooks, early stop   ({mid})": hooked(mid, True),
        f"hooks, early stop   ({last})": hooked(last, True),
    }
    for run in modes.values():  # warm-up: first-call allocations and kernel selection
        run()
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.repeats):
        for name, run in modes.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)

    print(
        f"{loaded.name}: {tokens.n_contexts} contexts x {args.context_length} tokens, batch {args.batch}, "
        f"median of {args.repeats}, torch threads {torch.get_num_threads()}, device {loaded.device}"
    )
    baseline = n_tokens / statistics.median(times["plain forward (baseline)"])
    for name, samples in times.items():
        rate = n_tokens / statistics.median(samples)
        print(f"  {name:<48} {rate:9.0f} tokens/s   ratio {rate / baseline:5.2f}")


if __name__ == "__main__":
    main()
