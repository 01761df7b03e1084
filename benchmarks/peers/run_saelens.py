"""SAELens' side of bench_vs_peers: `.peers/saelens/venv/bin/python run_saelens.py JOB.json`.

SAELens' SAETrainer with a data provider (its seam for activations from elsewhere) over the shared
token stream, with the trainer config of its LanguageModelSAERunnerConfig defaults (Adam 3e-4, constant schedule, no warmup)
and SAE configs (TopK: AuxK coefficient 1, decoder rows at norm 0.1, no input normalisation;
standard = ReLU + L1 1.0; JumpReLU: L0 coefficient 1.0, threshold 0.01, bandwidth 0.05; BatchTopK).
Only the sizes of the comparison are set (d_in, d_sae, k, tokens, batch). The trained SAE is saved
and loaded back with SAE.load_from_disk (BatchTopK comes back as JumpReLU, as SAELens exports it)
and judged on the held-out tokens.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, batches, evaluate, read_job, steps_of, write_result  # noqa: E402

import sae_lens  # noqa: E402
from sae_lens import SAE, SAETrainer  # noqa: E402
from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig  # noqa: E402

ARCHITECTURES = {  # ours -> SAELens' training SAE and its config
    "topk": ("TopKTrainingSAE", "TopKTrainingSAEConfig"),
    "batchtopk": ("BatchTopKTrainingSAE", "BatchTopKTrainingSAEConfig"),
    "relu": ("StandardTrainingSAE", "StandardTrainingSAEConfig"),
    "jumprelu": ("JumpReLUTrainingSAE", "JumpReLUTrainingSAEConfig"),
}


def main() -> None:
    job = read_job()
    torch.manual_seed(job["seed"])
    sae_class, config_class = (getattr(sae_lens, name) for name in ARCHITECTURES[job["architecture"]])
    d_in = int(np.load(job["train"], mmap_mode="r").shape[1])
    sizes = {"d_in": d_in, "d_sae": job["d_sae"]}
    if job["architecture"] in ("topk", "batchtopk"):
        sizes["k"] = job["k"]
    sae_cfg = config_class(**sizes)
    sae = sae_class(sae_cfg)
    tokens = steps_of(job) * job["batch_size"]
    # The runner config carries SAELens' documented defaults; its trainer part is what SAETrainer takes.
    runner_cfg = LanguageModelSAERunnerConfig(sae=sae_cfg, training_tokens=tokens,
                                              train_batch_size_tokens=job["batch_size"], device="cpu",
                                              checkpoint_path=None, output_path=None, seed=job["seed"],
                                              logger=LoggingConfig(log_to_wandb=False), verbose=False)
    trainer_cfg = runner_cfg.to_sae_trainer_config()
    trainer = SAETrainer(trainer_cfg, sae, data_provider=batches(job))
    with Timer() as timer:
        trained = trainer.fit()
    saved = Path(job["workdir"]) / "sae"
    trained.save_inference_model(str(saved))  # what its training runner writes at the end
    inference = SAE.load_from_disk(str(saved), device="cpu").eval()

    @torch.no_grad()
    def forward(x: torch.Tensor):
        latents = inference.encode(x)
        return inference.decode(latents), latents

    recipe = {name: value for name, value in asdict(trainer_cfg).items()
              if name in ("lr", "lr_end", "lr_scheduler_name", "lr_warm_up_steps", "lr_decay_steps", "adam_beta1", "adam_beta2",
                          "dead_feature_window")}
    recipe.update({name: value for name, value in asdict(sae_cfg).items()
                   if name not in ("d_in", "d_sae", "k", "metadata", "device", "dtype")})
    write_result(job, library="saelens", version=version("sae-lens"), timer=timer, recipe=recipe,
                 heldout=evaluate(forward, job["heldout"], job["d_sae"]))


if __name__ == "__main__":
    main()
