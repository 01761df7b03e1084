"""Sparse autoencoders: architectures, trainer, checkpoints, SAELens export. No Redis in here.

    from mistudio.sae import TrainingConfig, Trainer, train_and_export, load_sae

Names are imported lazily: validating a TrainingConfig (before a job is queued) never imports torch.
"""

from __future__ import annotations

from mistudio.lazy import lazy_exports

_EXPORTS = {
    "ARCHITECTURES": "registry",
    "BatchTopKSAE": "batchtopk",
    "CELossEvaluator": "evaluation",
    "CommitRefused": "checkpoint",
    "JumpReluSAE": "jumprelu",
    "ReluSAE": "relu",
    "SAEConfig": "config",
    "SparseAutoencoder": "base",
    "SyntheticFeatures": "synthetic",
    "TopKSAE": "topk",
    "TrainOutput": "base",
    "Trainer": "trainer",
    "TrainingConfig": "config",
    "build_sae": "trainer",
    "ce_loss_recovered": "evaluation",
    "export_saelens": "export",
    "get_architecture": "registry",
    "latest_checkpoint": "checkpoint",
    "list_checkpoints": "checkpoint",
    "load_sae": "export",
    "mmcs": "synthetic",
    "train_and_export": "run",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
