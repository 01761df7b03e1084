"""EleutherAI sparsify's side of bench_vs_peers: `.peers/sparsify/venv/bin/python run_sparsify.py JOB.json`.

sparsify trains on a model's forward pass, so its own `Trainer.fit()` runs unchanged on a stand-in
model whose one layer outputs the cached activations (its "token ids" are row numbers of the
training array, in common.row_order's order): sparsify's default recipe, bookkeeping and
checkpointing all run as they do on a real model. Only the sizes of the comparison are set
(num_latents, k, tokens per step) and wandb is off; the SAE it saved last (sparsify saves the
schedule-free average, `optimizer.eval()`) is loaded back and judged on the held-out tokens.
sparsify has TopK only (its other activation, groupmax, has no counterpart here).
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, evaluate, read_job, row_order, steps_of, write_result  # noqa: E402

from sparsify import SparseCoder, SparseCoderConfig, TrainConfig, Trainer  # noqa: E402

SEQUENCE = 128  # tokens per "sequence" of the stand-in dataset; batch_size / SEQUENCE sequences a step


class CachedActivations(nn.Module):
    """A stand-in model: layers.0 outputs rows of the activation table; input_ids are row numbers."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table
        self.layers = nn.ModuleList([nn.Identity()])
        self.config = SimpleNamespace(num_hidden_layers=1)

    @property
    def base_model(self):
        return self

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def dummy_inputs(self):
        return {"input_ids": torch.zeros(1, 1, dtype=torch.long)}

    def forward(self, input_ids):
        return self.layers[0](self.table[input_ids])


class RowSequences(torch.utils.data.Dataset):
    def __init__(self, rows: np.ndarray):
        self.rows = torch.from_numpy(rows.reshape(-1, SEQUENCE))

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"input_ids": self.rows[i]}


def main() -> None:
    job = read_job()
    if job["architecture"] != "topk":
        raise SystemExit(f"sparsify has no {job['architecture']} SAE")
    if job["batch_size"] % SEQUENCE:
        raise SystemExit(f"batch_size must be a multiple of {SEQUENCE}")
    table = torch.from_numpy(np.load(job["train"]).astype(np.float32, copy=False))
    rows = row_order(table.shape[0], steps_of(job) * job["batch_size"], job["seed"])
    cfg = TrainConfig(
        SparseCoderConfig(num_latents=job["d_sae"], k=job["k"]),
        batch_size=job["batch_size"] // SEQUENCE, hookpoints=["layers.0"], init_seeds=[job["seed"]],
        log_to_wandb=False, save_dir=job["workdir"], run_name="sae",
    )
    trainer = Trainer(cfg, RowSequences(rows), CachedActivations(table))
    with Timer() as timer:
        trainer.fit()
    sae = SparseCoder.load_from_disk(Path(job["workdir"]) / "sae" / "layers.0").eval()

    def forward(x: torch.Tensor):
        acts, indices, _ = sae.encode(x)
        latents = torch.zeros(x.shape[0], sae.num_latents).scatter_(1, indices, acts.float())
        return sae.decode(acts, indices), latents

    lr = cfg.lr or 5e-3 / (job["d_sae"] / 2**14) ** 0.5  # what its signum branch picks (trainer.py)
    recipe = {"optimizer": cfg.optimizer + " (schedule-free, momentum 0.95)", "lr": lr,
              "lr_warmup_steps": "none (signum)", "auxk_alpha": cfg.auxk_alpha,
              "dead_feature_threshold": cfg.dead_feature_threshold, "b_dec_init": "mean of the first batch",
              "encoder_init": "nn.Linear default, W_dec = W_enc unit rows", "loss": cfg.loss_fn}
    write_result(job, library="sparsify", version=version("eai-sparsify"), timer=timer, recipe=recipe,
                 heldout=evaluate(forward, job["heldout"], job["d_sae"]))


if __name__ == "__main__":
    main()
