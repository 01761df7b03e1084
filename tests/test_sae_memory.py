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
