"""Sparse autoencoders: architectures, trainer, checkpoints, SAELens export. No Redis in here.

    from mistudio.sae import TrainingConfig, Trainer, run_training, load_sae
"""

from mistudio.sae.base import SparseAutoencoder, TrainOutput
from mistudio.sae.batchtopk import BatchTopKSAE
from mistudio.sae.checkpoint import CommitRefused, latest_checkpoint, list_checkpoints
from mistudio.sae.config import SAEConfig, TrainingConfig
from mistudio.sae.evaluation import CELossEvaluator, ce_loss_recovered
from mistudio.sae.export import export_saelens, load_sae
from mistudio.sae.jumprelu import JumpReluSAE
from mistudio.sae.registry import ARCHITECTURES, get_architecture
from mistudio.sae.relu import ReluSAE
from mistudio.sae.run import run_training
from mistudio.sae.synthetic import SyntheticFeatures, mmcs
from mistudio.sae.topk import TopKSAE
from mistudio.sae.trainer import Trainer, build_sae

__all__ = [
    "ARCHITECTURES",
    "BatchTopKSAE",
    "CELossEvaluator",
    "CommitRefused",
    "JumpReluSAE",
    "ReluSAE",
    "SAEConfig",
    "SparseAutoencoder",
    "SyntheticFeatures",
    "TopKSAE",
    "TrainOutput",
    "Trainer",
    "TrainingConfig",
    "build_sae",
    "ce_loss_recovered",
    "export_saelens",
    "get_architecture",
    "latest_checkpoint",
    "list_checkpoints",
    "load_sae",
    "mmcs",
    "run_training",
]
