"""A new architecture is one module: written outside mistudio, it trains, exports, reloads and is a CLI choice.

The toy module below is all there is to it: an SAE class and its `Architecture` record, found
through a `mistudio.architectures` entry point (a dist-info folder on sys.path, as `pip install`
of a plugin package would leave). Nothing in mistudio changes.
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from helpers import run_cli
from mistudio.errors import InvalidInput
from mistudio.sae import SyntheticFeatures, TrainingConfig, latest_checkpoint, load_sae, registry, train_and_export

TOY_MODULE = '''
"""A plain-L1 ReLU SAE (no decoder-norm weighting): a whole architecture in one module."""
import torch

from mistudio.sae.base import SparseAutoencoder, TrainOutput, count_active, squared_error
from mistudio.sae.registry import Architecture


class PlainL1SAE(SparseAutoencoder):
    architecture = "plain_l1"

    def encode(self, x):
        return torch.relu(self.pre_activations(x))

    def training_forward(self, x, *, sparsity_coefficient=0.0, dead_mask=None):
        acts = self.encode(x)
        recon = self.decode(acts)
        mse = squared_error(x.to(recon.dtype), recon)
        l1 = acts.abs().sum(dim=-1).mean()
        fired = count_active(acts)
        return TrainOutput(recon, mse + sparsity_coefficient * l1, {"mse_loss": mse.detach(), "l1_loss": l1.detach()},
                           fired, fired.sum() / acts.shape[0])


ARCHITECTURE = Architecture(
    "plain_l1", PlainL1SAE, "a ReLU SAE with a plain L1 penalty (a plugin)", saelens_name="standard",
    defaults={"l1_coefficient": 2.5}, sparsity_field="l1_coefficient",
)
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch) -> Path:
    """The toy module and its entry point in a folder on sys.path; the folder."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "toy_sae.py").write_text(textwrap.dedent(TOY_MODULE))
    dist = folder / "toy_sae_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-sae-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\nplain_l1 = toy_sae:ARCHITECTURE\n")
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("toy_sae", None)


def toy_config(**kw) -> TrainingConfig:
    base = dict(hook_point="blocks.0.hook_resid_post", architecture="plain_l1", d_sae=64, batch_size=64, steps=40,
                lr=5e-3, log_every=10, checkpoint_every=25, device="cpu", seed=0)
    return TrainingConfig(**{**base, **kw})


def test_a_plugin_architecture_is_validated_with_its_own_defaults_and_fields(plugin):
    assert registry.names()[:4] == ("relu", "topk", "batchtopk", "jumprelu") and "plain_l1" in registry.names()
    toy_config(architecture="topk", k=4)
    assert "toy_sae" not in sys.modules  # other configs validate without importing the plugin (and torch)
    cfg = toy_config()
    assert "toy_sae" in sys.modules
    assert cfg.l1_coefficient == 2.5  # the plugin's default, from its record
    assert cfg.k is None and cfg.l0_coefficient is None
    with pytest.raises(InvalidInput) as info:
        toy_config(k=4)
    assert info.value.field == "k" and "only applies to topk or batchtopk, not architecture 'plain_l1'" in str(info.value)
    with pytest.raises(InvalidInput) as info:
        toy_config(architecture="plain_l2")
    assert info.value.field == "architecture" and "plain_l1" in info.value.fix


def test_a_plugin_architecture_trains_exports_and_reloads(plugin, tmp_path):
    run_dir = tmp_path / "run"
    seen = []
    metrics = train_and_export(toy_config(), run_dir, SyntheticFeatures(n_features=64, d=32, batch_size=64, seed=0),
                           on_progress=seen.append)
    assert metrics["step"] == 40 and not metrics["stopped"]
    assert seen[-1]["sparsity_coefficient"] == pytest.approx(2.5)  # the trainer read the record's sparsity field
    # Reconstruction improved (the total loss need not fall: the penalty warms up over half the run).
    assert seen[-1]["mse_loss"] < seen[0]["mse_loss"]
    assert "l1_loss" in seen[-1]  # the plugin's own loss terms are logged

    cfg = json.loads((run_dir / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == "standard" and cfg["metadata"]["training_architecture"] == "plain_l1"
    exported = load_sae(run_dir / "sae")
    checkpointed = load_sae(latest_checkpoint(run_dir))
    assert type(exported).__name__ == type(checkpointed).__name__ == "PlainL1SAE"
    x = next(iter(SyntheticFeatures(n_features=64, d=32, batch_size=64, seed=1)))
    with torch.no_grad():
        assert torch.allclose(exported(x), checkpointed(x), atol=1e-5)
        assert float(((exported(x) - x) ** 2).sum() / (x ** 2).sum()) < 0.75  # it learned something (0.54 here; untrained ~0.9)


def test_the_cli_offers_a_plugin_architecture(plugin):
    path = os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")])
    out = run_cli("train", "--help", env={"PYTHONPATH": path}, timeout=120)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert re.search(r"--architecture \[relu\|topk\|batchtopk\|jumprelu\|plain_l1\]", text)
    assert "plain_l1: a ReLU SAE with a plain L1 penalty (a plugin)" in text


# `architecture ==`, `architecture in (...)` / `in SOME_TABLE`, or any comparison with an architecture's name.
NAMES = "relu|topk|batchtopk|jumprelu|standard"
def test_an_architecture_registered_in_process_is_a_choice_and_a_name_is_taken_once(monkeypatch):
    from mistudio.sae.relu import ReluSAE

    class NotebookSAE(ReluSAE):
        architecture = "notebook_relu"

    monkeypatch.setattr(registry, "_registered", {})  # forgotten after the test
    registry.register(registry.Architecture("notebook_relu", NotebookSAE, "defined in a notebook cell",
                                            saelens_name="standard", sparsity_field="l1_coefficient"))
    assert registry.get_architecture("notebook_relu") is NotebookSAE
    cfg = toy_config(architecture="notebook_relu", l1_coefficient=1.0)
    assert cfg.l1_coefficient == 1.0
    with pytest.raises(InvalidInput, match="l1_coefficient: architecture 'notebook_relu' needs it"):
        toy_config(architecture="notebook_relu")  # its record gives no default
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.Architecture("topk", NotebookSAE, "a second topk", saelens_name="topk"))
    with pytest.raises(TypeError, match="must be 'wrong'"):
        registry.Architecture("wrong", NotebookSAE, "a mismatched name", saelens_name="standard").load()


SWITCH = re.compile(rf"architecture\s*(==|!=|\b(not )?in\s*([(\[{{]|[A-Z_]{{2,}}\b))"
                    rf"|(==|!=|\bin\s*[(\[{{])\s*[\"']({NAMES})[\"']|[\"']({NAMES})[\"']\s*(==|!=|\bin\b)")
ARCHITECTURE_MODULES = {"registry.py", "base.py", "relu.py", "topk.py", "batchtopk.py", "jumprelu.py"}


def test_no_architecture_switch_outside_the_architecture_modules_and_the_registry():
    root = Path(__file__).resolve().parents[1] / "mistudio"
    found = [f"{path.relative_to(root)}:{n}: {line.strip()}"
             for path in root.rglob("*.py") if not (path.parent.name == "sae" and path.name in ARCHITECTURE_MODULES)
             for n, line in enumerate(path.read_text().splitlines(), 1) if SWITCH.search(line)]
    assert found == []
