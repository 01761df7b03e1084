"""miStudio's side of bench_vs_peers: `python run_mistudio.py JOB.json` (see common.py for JOB).

Trains with the public API and its defaults, as `mistudio train` does: a TrainingConfig with only
the sizes of the comparison given (architecture, d_sae, k, tokens, batch, seed), train_and_export in
a run folder (checkpoints, metrics, the SAELens export), then the exported SAE is loaded back and
judged on the held-out tokens.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, batches, evaluate, read_job, steps_of, write_result  # noqa: E402

from mistudio.sae import TrainingConfig, load_sae, train_and_export  # noqa: E402
from mistudio.sae.memory import reuse_freed_memory  # noqa: E402

TOPK_FAMILY = ("topk", "batchtopk")


def source_version() -> str:
    """mistudio's version and the commit of this checkout (+dirty when it has uncommitted changes)."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return version("mistudio") + (f"+{commit}" if commit else "")


def main() -> None:
    job = read_job()
    reuse_freed_memory()  # as the training worker does (mistudio/sae/memory.py)
    d_in = int(np.load(job["train"], mmap_mode="r").shape[1])
    params = {"hook_point": job["hook_point"], "architecture": job["architecture"], "d_in": d_in,
              "d_sae": job["d_sae"], "steps": steps_of(job), "batch_size": job["batch_size"], "seed": job["seed"]}
    if job["architecture"] in TOPK_FAMILY:
        params["k"] = job["k"]
    config = TrainingConfig.model_validate(params)
    run_dir = Path(job["workdir"]) / "run"
    with Timer() as timer:
        metrics = train_and_export(config, run_dir, batches(job))
    sae = load_sae(metrics["export_dir"]).eval()

    def forward(x: torch.Tensor):
        latents = sae.encode(x)
        return sae.decode(latents), latents

    recipe = {name: getattr(config, name, None) for name in (
        "lr", "lr_warmup_steps", "lr_decay_steps", "adam_beta1", "adam_beta2", "aux_k", "aux_k_coefficient",
        "normalize_activations", "l1_coefficient", "l0_coefficient", "sparsity_warmup_steps", "encoder_init_scale",
        "jumprelu_init_threshold", "jumprelu_bandwidth")}
    write_result(job, library="mistudio", version=source_version(), timer=timer, recipe=recipe, heldout=evaluate(forward, job["heldout"], job["d_sae"]))


if __name__ == "__main__":
    main()
