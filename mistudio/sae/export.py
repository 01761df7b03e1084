"""Export to the SAELens 6.x disk layout, and load our exports / checkpoints / runs back.

An export folder holds `cfg.json`, `sae_weights.safetensors` and `sparsity.safetensors`
(key "sparsity": log10 firing rate per latent, what SAELens reads) and loads with
`sae_lens.SAE.load_from_disk(folder)`. What SAELens needs in cfg.json:
- `architecture`: the registry's `saelens_name` ("standard" for our relu; BatchTopK is exported,
  as SAELens itself does, as a JumpReLU with the global threshold on every latent).
- `d_in`, `d_sae`, `dtype`, and what the SAE class adds (`saelens_cfg`: `k` for TopK).
- `metadata.sae_lens_version` >= 6: without it the config is read as pre-6.0 and rewritten.
  It marks the file format, not a SAELens install.
The input scale used in training is folded into the weights, so the export takes raw
activations (normalize_activations "none"). `metadata.mistudio_metrics` holds the run's final
metrics (explained variance, L0, and for a causal LM CE-loss recovered and KL divergence).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import mistudio
from mistudio.errors import InvalidInput
from mistudio.runs import EXPORT, EXPORT_CONFIG, EXPORT_SPARSITY, EXPORT_WEIGHTS
from mistudio.sae import registry
from mistudio.sae.base import SparseAutoencoder
from mistudio.sae.checkpoint import commit_dir, latest_checkpoint, load_checkpoint
from mistudio.sae.config import TrainingConfig
from mistudio.sae.trainer import build_sae
from mistudio.tempdirs import temp_sibling

SAELENS_FORMAT_VERSION = "6.0.0"
# Final metrics copied into the export's metadata (those the run measured, finite values only).
EXPORTED_METRICS = ("step", "tokens_seen", "explained_variance", "mse", "l0", "dead_fraction", "dense_fraction",
                    "ce_loss_recovered", "kl_divergence", "ce_clean", "ce_spliced", "ce_zero")
_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def saelens_config(sae: SparseAutoencoder, config: TrainingConfig | None = None, metrics: dict | None = None) -> dict:
    """The cfg.json dict for an inference SAE (scale already folded); metrics: the run's final ones."""
    hook_name = config.hook_point if config is not None else None
    model_name = config.model if config is not None else None
    cfg = {
        "architecture": registry.get(sae.architecture).saelens_name,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": _DTYPES[sae.W_enc.dtype],
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        # Older readers look for these at the top level; SAELens 6 reads them from metadata.
        "hook_name": hook_name,
        "model_name": model_name,
        "metadata": {
            "sae_lens_version": SAELENS_FORMAT_VERSION,
            "sae_lens_training_version": None,
            "hook_name": hook_name,
            "model_name": model_name,
            "dataset_path": config.dataset if config is not None else None,
            "training_architecture": sae.architecture,
            "mistudio_version": mistudio.__version__,
            "mistudio_hparams": sae.hparams(),
            "mistudio_config": config.model_dump(mode="json") if config is not None else None,
            "mistudio_metrics": ({k: metrics[k] for k in EXPORTED_METRICS if _finite(metrics.get(k))}
                                 if metrics else None),
        },
    }
    return {**cfg, **sae.saelens_cfg()}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def saelens_state_dict(sae: SparseAutoencoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in sae.saelens_state_dict().items()}


def export_saelens(
    sae: SparseAutoencoder,
    path: Path | str,
    config: TrainingConfig | None = None,
    *,
    log_feature_sparsity: torch.Tensor | None = None,
    metrics: dict | None = None,
    before_commit=None,
    step: int = 0,
) -> Path:
    """Write an inference SAE (input scale already folded, see Trainer.inference_sae) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)  # named after this process: a killed export's leftover is removed later
    tmp.mkdir()
    try:
        save_file(saelens_state_dict(sae), tmp / EXPORT_WEIGHTS)
        cfg = saelens_config(sae, config, metrics)
        (tmp / EXPORT_CONFIG).write_text(json.dumps(cfg, indent=2))
        if log_feature_sparsity is not None:
            save_file({"sparsity": log_feature_sparsity.detach().float().cpu().contiguous()}, tmp / EXPORT_SPARSITY)
        commit_dir(tmp, path, step, before_commit)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_sae(path: Path | str, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """An inference SAE (eval mode, takes raw activations) from an export, a checkpoint or a run folder."""
    path = Path(path)
    if (path / EXPORT_WEIGHTS).is_file():
        return _load_export(path).to(device)
    if (path / "sae.safetensors").is_file():
        return _load_checkpoint(path).to(device)
    if (path / EXPORT / EXPORT_WEIGHTS).is_file():
        return _load_export(path / EXPORT).to(device)
    latest = latest_checkpoint(path)
    if latest is not None:
        return _load_checkpoint(latest).to(device)
    raise InvalidInput("path", f"no SAE found at {path}", "give an export folder, a checkpoint folder or a run folder")


def _load_export(path: Path) -> SparseAutoencoder:
    cfg = json.loads((path / EXPORT_CONFIG).read_text())
    meta = cfg.get("metadata") or {}
    name = meta.get("training_architecture") or registry.from_saelens_name(cfg["architecture"]).name
    cls = registry.get_architecture(name)
    hparams = {**(meta.get("mistudio_hparams") or {}), **cls.hparams_from_saelens(cfg)}
    dtype = getattr(torch, cfg.get("dtype", "float32").replace("torch.", ""))
    sae = cls(cfg["d_in"], cfg["d_sae"], dtype=dtype, **hparams)
    sae.load_saelens_state_dict(load_file(path / EXPORT_WEIGHTS))
    return sae.eval()


def _load_checkpoint(path: Path) -> SparseAutoencoder:
    config_json, weights, state = load_checkpoint(path)
    config = TrainingConfig.model_validate(config_json)
    sae = build_sae(config)
    sae.load_state_dict(weights)
    sae.fold_input_scale(float(state["scale"]))
    return sae.eval()
