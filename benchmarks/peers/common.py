"""What every runner of benchmarks/bench_vs_peers.py shares, so all libraries see the same data and
are judged by the same code. numpy and torch only: it is imported by each peer's runner under that
peer's own virtual environment (all of them have the same CPU torch), so it may not import mistudio.

A runner is started as `python runner.py JOB.json` and writes JOB's "out" file (JSON). The job:
  train, heldout   .npy files [n, d_in] float32 (the cached activations; held-out tokens never train)
  architecture     topk | batchtopk | relu | jumprelu
  d_sae, k         the width and, for the TopK family, active latents per token
  tokens           the training budget; batch_size tokens per step; seed
  workdir          a scratch folder the runner may write (checkpoints of libraries that insist)
The result: {"library", "version", "architecture", "tokens", "steps", "train_s", "tokens_per_s",
"peak_rss_bytes", "recipe" (what the library's defaults chose), "heldout": evaluate(...)}.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

EVAL_BATCH = 4096


def read_job() -> dict:
    """The job of this runner process (its JSON file is the first argument)."""
    return json.loads(Path(sys.argv[1]).read_text())


def steps_of(job: dict) -> int:
    return math.ceil(job["tokens"] / job["batch_size"])


def row_order(n_rows: int, n_tokens: int, seed: int) -> np.ndarray:
    """Which training row each of the n_tokens training tokens is: a fresh permutation per epoch,
    seeded by (seed, epoch), so every library trains on the very same tokens in the same order."""
    epochs = math.ceil(n_tokens / n_rows)
    order = np.concatenate([np.random.default_rng([seed, epoch]).permutation(n_rows) for epoch in range(epochs)])
    return order[:n_tokens]


def batches(job: dict) -> Iterator[torch.Tensor]:
    """The training stream: float32 [batch_size, d_in] tensors, steps_of(job) of them."""
    train = np.load(job["train"], mmap_mode="r")
    n = steps_of(job) * job["batch_size"]
    order = row_order(train.shape[0], n, job["seed"])
    for start in range(0, n, job["batch_size"]):
        rows = np.sort(order[start : start + job["batch_size"]])  # sorted reads; the SAE step ignores row order
        yield torch.from_numpy(np.ascontiguousarray(train[rows], dtype=np.float32))


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], heldout_path: str,
             d_sae: int) -> dict:
    """Held-out quality of an SAE given `forward(x) -> (reconstruction, latents [n, d_sae])`, on raw
    activations: FVU = sum |x - x_hat|^2 / sum |x - mean(x)|^2 over the held-out tokens (the mean is
    theirs), explained variance = 1 - FVU, L0 = mean latents != 0 per token, dead fraction =
    latents that never fire on any held-out token."""
    x_all = np.load(heldout_path, mmap_mode="r")
    mean = torch.from_numpy(np.asarray(x_all, dtype=np.float64).mean(0))
    err = total = active = 0.0
    fired = torch.zeros(d_sae, dtype=torch.bool)
    for start in range(0, x_all.shape[0], EVAL_BATCH):
        x = torch.from_numpy(np.array(x_all[start : start + EVAL_BATCH], dtype=np.float32))
        recon, latents = forward(x)
        err += float((x.double() - recon.double()).pow(2).sum())
        total += float((x.double() - mean).pow(2).sum())
        nonzero = latents != 0
        active += float(nonzero.sum())
        fired |= nonzero.any(0).cpu()
    fvu = err / total
    n = x_all.shape[0]
    return {"fvu": fvu, "explained_variance": 1 - fvu, "l0": active / n, "dead_fraction": 1 - float(fired.float().mean()),
            "tokens": n}


def peak_rss_bytes() -> int:
    """This process's own peak resident memory: VmHWM on Linux, as mistudio.sae.memory.peak_memory
    reads it (peer venvs have no mistudio to import). Not ru_maxrss: a runner is a subprocess of the
    benchmark, and ru_maxrss keeps the forking parent's peak across exec."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class Timer:
    """Wall time of the training loop alone (setup and evaluation excluded)."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def write_result(job: dict, *, library: str, version: str, timer: Timer, recipe: dict, heldout: dict) -> None:
    tokens = steps_of(job) * job["batch_size"]
    result = {
        "library": library, "version": version, "architecture": job["architecture"], "d_sae": job["d_sae"],
        "k": job.get("k"), "tokens": tokens, "steps": steps_of(job), "train_s": timer.seconds,
        "tokens_per_s": tokens / timer.seconds, "peak_rss_bytes": peak_rss_bytes(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "recipe": recipe, "heldout": heldout,
    }
    Path(job["out"]).write_text(json.dumps(result, indent=1))
