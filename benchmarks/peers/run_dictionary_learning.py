"""dictionary_learning's side of bench_vs_peers: `.peers/dictionary_learning/venv/bin/python
run_dictionary_learning.py JOB.json`.

Its `trainSAE(data, trainer_configs, steps)` over the shared token stream (trainSAE takes any
iterator of activation batches), one trainer with that trainer's defaults: TopKTrainer (lr
2e-4 / sqrt(d_sae / 2^14), AuxK 1/32, geometric-median b_dec, grad-norm clip 1), BatchTopKTrainer,
StandardTrainer (ReLU, L1 0.1, lr 1e-3), JumpReluTrainer (lr 7e-5, bandwidth 0.001, its L0 target
set to k, the width/k of the comparison). Two of its defaults cannot run here as they are: its
step counts (warmup_steps 1000, sparsity_warmup_steps 2000, threshold_start_step 1000) are sized
for its demo's 12,207-step run (50M tokens of 4096) and its own check refuses a warmup as long as
the run, so each is scaled to the same fraction of this run (x steps / 12,207). The saved
dictionary (ae.pt) is loaded back with its class and judged on the held-out tokens.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, batches, evaluate, read_job, steps_of, write_result  # noqa: E402

from dictionary_learning.dictionary import AutoEncoder, JumpReluAutoEncoder  # noqa: E402
from dictionary_learning.trainers import BatchTopKTrainer, JumpReluTrainer, StandardTrainer, TopKTrainer  # noqa: E402
from dictionary_learning.trainers.batch_top_k import BatchTopKSAE  # noqa: E402
from dictionary_learning.trainers.top_k import AutoEncoderTopK  # noqa: E402
from dictionary_learning.training import trainSAE  # noqa: E402

DEMO_STEPS = 50_000_000 // 4096  # the run its step-count defaults are sized for (demo.py)
# ours -> (trainer, its dictionary class, its step-count arguments and their defaults)
ARCHITECTURES = {
    "topk": (TopKTrainer, AutoEncoderTopK, {"warmup_steps": 1000, "threshold_start_step": 1000}),
    "batchtopk": (BatchTopKTrainer, BatchTopKSAE, {"warmup_steps": 1000, "threshold_start_step": 1000}),
    "relu": (StandardTrainer, AutoEncoder, {"warmup_steps": 1000, "sparsity_warmup_steps": 2000}),
    "jumprelu": (JumpReluTrainer, JumpReluAutoEncoder, {"warmup_steps": 1000, "sparsity_warmup_steps": 2000}),
}


def main() -> None:
    job = read_job()
    trainer_class, dict_class, step_defaults = ARCHITECTURES[job["architecture"]]
    steps = steps_of(job)
    d_in = int(np.load(job["train"], mmap_mode="r").shape[1])
    scaled = {name: max(1, round(default * steps / DEMO_STEPS)) for name, default in step_defaults.items()}
    config = {"trainer": trainer_class, "steps": steps, "activation_dim": d_in, "dict_size": job["d_sae"],
              "layer": 0, "lm_name": "cached-activations", "seed": job["seed"], "device": "cpu", **scaled}
    if job["architecture"] in ("topk", "batchtopk"):
        config["k"] = job["k"]
    if job["architecture"] == "jumprelu":
        config["target_l0"] = float(job["k"])
    save_dir = Path(job["workdir"]) / "dl"
    with Timer() as timer:
        trainSAE(data=batches(job), trainer_configs=[dict(config)], steps=steps, save_dir=str(save_dir), device="cpu")
    path = save_dir / "trainer_0" / "ae.pt"
    if dict_class is AutoEncoder:
        ae = AutoEncoder.from_pretrained(str(path), normalize_decoder=False)
    else:
        ae = dict_class.from_pretrained(str(path))
    ae.eval()

    @torch.no_grad()
    def forward(x: torch.Tensor):
        latents = ae.encode(x)  # TopK: per-token top k; BatchTopK: its learned threshold (its default)
        return ae.decode(latents), latents

    trainer = trainer_class(**{k: v for k, v in config.items() if k != "trainer"})
    recipe = {name: value for name, value in trainer.config.items()
              if name not in ("dict_class", "trainer_class", "activation_dim", "dict_size", "device", "layer",
                              "lm_name", "wandb_name", "submodule_name", "steps", "k")}
    recipe["step_counts_scaled"] = f"{step_defaults} x {steps}/{DEMO_STEPS}"
    write_result(job, library="dictionary_learning", version=version("dictionary-learning"), timer=timer,
                 recipe=recipe, heldout=evaluate(forward, job["heldout"], job["d_sae"]))


if __name__ == "__main__":
    main()
