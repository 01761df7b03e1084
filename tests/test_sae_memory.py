"""reuse_freed_memory: a training loop's big temporaries stop costing page faults (Linux/glibc).

Runs in a child process: the setting is process-wide and must not leak into the test session.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = r"""
import resource, sys, torch
from mistudio.sae import TrainingConfig
from mistudio.sae.memory import reuse_freed_memory
from mistudio.sae.trainer import build_sae

if sys.argv[1] == "tuned" and not reuse_freed_memory():
    print("unsupported"); sys.exit(0)
# [4096, 3072] fp32 temporaries are 48 MB: above glibc's largest mmap threshold (32 MB).
sae = build_sae(TrainingConfig(hook_point="blocks.0.hook_resid_post", architecture="relu", d_in=16, d_sae=3072))
x = torch.randn(4096, 16)
def step():
    sae.training_forward(x, sparsity_coefficient=1.0).loss.backward()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_training_steps_reuse_freed_blocks():
    tuned = _faults("tuned")
    if tuned == "unsupported":
        pytest.skip("not glibc")
    default = int(_faults("default"))
    assert default > 50_000  # glibc's default: ~12k faults per 48 MB temporary, several per step
    # Tuned, the steps reuse their blocks: a few new pages (12-25k seen) against ~220k.
    assert int(tuned) < default / 4


PEAK_CHILD = r"""
import json, os, resource, sys, torch
from mistudio.sae import Trainer, TrainingConfig
from mistudio.sae.memory import expected_training_peak
arch, kw = sys.argv[1], json.loads(sys.argv[2])
cfg = TrainingConfig(hook_point="blocks.0.hook_resid_post", architecture=arch, d_in=64, d_sae=4096, batch_size=2048,
                     steps=4, log_every=2, checkpoint_every=100, device="cpu", **kw)
x = torch.randn(cfg.batch_size, cfg.d_in)
trainer = Trainer(cfg)
trainer.start(x)
before = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
metrics = trainer.train([x] * 8)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) * 1024  # not ru_maxrss: it keeps the forking parent's peak
need = expected_training_peak([cfg])
print(json.dumps({"growth": peak - before, "sae": need["parameters"] + need["step"], "reported": metrics["peak_rss_mb"],
                  "peak": peak}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/statm, ru_maxrss in KiB")
@pytest.mark.parametrize("architecture, kw", [("topk", {"k": 32}), ("relu", {"l1_coefficient": 1.0}),
                                              ("jumprelu", {"l0_coefficient": 1.0})])
def test_the_expected_peak_bounds_what_a_small_training_measures_and_is_reported(architecture, kw):
    import json

    done = subprocess.run([sys.executable, "-c", PEAK_CHILD, architecture, json.dumps(kw)], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    # What training added to the process (parameters' gradients and Adam state, the steps'
    # temporaries) stays within the estimate, and the estimate is no more than 3x it.
    assert measured["growth"] <= measured["sae"] <= 3 * measured["growth"], measured
    assert measured["reported"] == pytest.approx(measured["peak"] / 2**20, rel=0.05)  # the metrics say it


def test_the_default_run_and_a_gpt2_small_16x_sae_fit_an_8gb_jetson():
    from mistudio.sae import TrainingConfig
    from mistudio.sae.config import check_memory
    from mistudio.sae.memory import expected_training_peak

    budget = 8 * 2**30
    default = TrainingConfig(hook_point="blocks.3.hook_resid_post", d_in=384, expansion_factor=8, k=32,
                             batch_size=4096)
    gpt2 = TrainingConfig(hook_point="blocks.6.hook_resid_post", d_in=768, expansion_factor=16, k=32, batch_size=4096)
    for cfg, model_bytes in ((default, 90 * 2**20), (gpt2, 124_000_000 * 4)):  # MiniLM-L6, GPT-2 small fp32
        check_memory(cfg, budget)  # accepted at submit
        peak = expected_training_peak([cfg], store_bytes=512 * 2**20, model_bytes=model_bytes)
        assert peak["total"] < budget / 2, peak  # with the store's buffer, the model and the runtime: room to spare
    assert expected_training_peak([gpt2])["step"] > expected_training_peak([default])["step"]
    sweep = expected_training_peak([default, default])
    assert sweep["parameters"] == 2 * expected_training_peak([default])["parameters"]  # all live at once
    assert sweep["step"] == expected_training_peak([default])["step"]  # one member's step at a time
