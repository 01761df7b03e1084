"""CPU allocator tuning for training loops (Linux/glibc), and the peak memory every training reports.

glibc serves allocations above 32 MB with a fresh mmap and unmaps them on free, so every
step's [batch, d_sae] tensors (4096 x 3072 fp32 = 50 MB each) are page-faulted and zeroed
by the kernel again: ~10 ms per tensor on a 2-core CPU, 10-25% of a dense step. Telling
glibc to serve everything from its heap and never trim it makes freed blocks reusable.
The price: the process keeps its peak memory until it exits, and glibc's 64-byte-aligned
blocks for torch can leave a few unreusable holes (a few hundred MB at worst seen here).
That suits a dedicated training worker process, not a notebook kernel or a test session,
so nothing calls it implicitly: the process that runs training opts in, once, up front.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from mistudio.errors import InvalidInput
from mistudio.sae.config import _size, training_memory

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def reuse_freed_memory() -> bool:
    """Keep freed large blocks for reuse (glibc only). Returns False where it does not apply."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: nothing to do
        return False
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok
    return ok


def _vm_hwm_kib() -> int | None:
    """Linux: this process' own peak RSS (VmHWM). ru_maxrss is not that: a process forked from a
    big parent (a worker's child, a test's subprocess) inherits the parent's peak across exec."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_memory(device=None) -> dict:
    """This process' peak memory so far, in MiB: resident set (every platform with `resource`) and,
    on a CUDA device, torch's peak allocation there. For every training report and summary."""
    out = {}
    try:
        import resource
    except ImportError:  # Windows
        resource = None
    hwm = _vm_hwm_kib()
    if hwm is not None:
        out["peak_rss_mb"] = hwm / 2**10
    elif resource is not None:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        out["peak_rss_mb"] = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    if device is not None and getattr(device, "type", device) == "cuda":
        import torch

        out["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


# [batch, d_sae] float copies one training step adds at its peak, gradients and Adam state aside:
# measured with peak RSS on CPU (benchmarks/bench_memory.py; 64x4096 and 384x3072 at batch 2048-4096
# and 768x12288 at 4096: TopK 1.9-3.7 with its sparse kernels, ReLU 3.8-5.7, JumpReLU 7.3), rounded up.
STEP_COPIES = {"topk": 3.5, "batchtopk": 3.5, "relu": 6.0, "jumprelu": 8.0}
PLUGIN_STEP_COPIES = 10.0  # an architecture we have not measured
INPUT_COPIES = 3  # [batch, d_in]: the batch, its scaled copy, the reconstruction
RUNTIME_BYTES = 400 * 2**20  # a Python process with torch imported (about 320-400 MB RSS here)


def expected_training_peak(configs, *, store_bytes: int = 0, model_bytes: int = 0) -> dict:
    """What training these SAE configs side by side (one job, one stream) is expected to hold at
    its peak, in bytes: every member's parameters, gradients and Adam moments; the largest
    member's step (members step one after another, so their temporaries never add up); the
    shuffle buffer of the activation store; the model kept for evaluation; the runtime. An
    estimate from measured peaks (STEP_COPIES), not the floor `sae.config.check_memory` refuses."""
    parameters = sum(training_memory(cfg)["parameters"] for cfg in configs)
    step = 0
    for cfg in configs:
        width = 8 if cfg.dtype == "float64" else 4
        copies = STEP_COPIES.get(cfg.architecture, PLUGIN_STEP_COPIES)
        step = max(step, int((copies * cfg.d_sae + INPUT_COPIES * cfg.d_in) * cfg.batch_size * width))
    parts = {"parameters": parameters, "step": step, "store": store_bytes, "model": model_bytes,
             "runtime": RUNTIME_BYTES}
    return {**parts, "total": sum(parts.values())}


def check_sweep_memory(configs, budget: int) -> None:
    """InvalidInput (field "sweep", with the numbers) when a sweep cannot fit MISTUDIO_MEMORY_BUDGET:
    the members' parameters, gradients and Adam state all live at once, one member's step at a time."""
    need = [training_memory(cfg) for cfg in configs]
    parameters = sum(n["parameters"] for n in need)
    step = max(n["step"] for n in need)
    if parameters + step <= budget:
        return
    raise InvalidInput(
        "sweep",
        f"{len(configs)} SAEs trained side by side need at least {_size(parameters + step)} (their parameters, "
        f"gradients and Adam state {_size(parameters)}, the largest step's activations {_size(step)}), more than "
        f"MISTUDIO_MEMORY_BUDGET = {_size(budget)}",
        "train fewer or smaller members per job (split the sweep), or raise MISTUDIO_MEMORY_BUDGET (bytes) if "
        "this device has the memory",
    )
