"""What a device has free, for heartbeats: GPU utilisation and free memory.

NVIDIA NVML (`pynvml`) when importable and a GPU answers; else a Jetson's `tegrastats`
(Jetsons have no NVML; their GPU shares the system RAM); else psutil (CPU and RAM
only, gpu_util None). Every field is best effort: a sample never raises.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import psutil

_nvml_handle = None


def _nvml() -> dict | None:
    global _nvml_handle
    try:
        import pynvml
    except ImportError:
        return None
    try:
        if _nvml_handle is None:
            pynvml.nvmlInit()
            first = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip() or "0"
            _nvml_handle = (pynvml.nvmlDeviceGetHandleByIndex(int(first)) if first.isdigit()
                            else pynvml.nvmlDeviceGetHandleByUUID(first))  # "GPU-..." ids
        util = pynvml.nvmlDeviceGetUtilizationRates(_nvml_handle)
        mem = pynvml.nvmlDeviceGetMemoryInfo(_nvml_handle)
        return {"gpu_util": float(util.gpu), "memory_free": int(mem.free), "memory_total": int(mem.total),
                "resource_source": "nvml"}
    except Exception:  # no driver, no GPU, or the index is wrong
        return None


_RAM = re.compile(r"RAM (\d+)/(\d+)MB")
_GR3D = re.compile(r"GR3D_FREQ (\d+)%")


def _tegrastats() -> dict | None:
    binary = shutil.which("tegrastats")
    if binary is None:
        return None
    try:
        # tegrastats streams one line per interval until killed: read the first one.
        proc = subprocess.Popen([binary, "--interval", "100"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = proc.stdout.readline()
        finally:
            proc.kill()
            proc.wait(2)
    except (OSError, subprocess.SubprocessError):
        return None
    ram, gr3d = _RAM.search(line), _GR3D.search(line)
    if ram is None:
        return None
    used, total = int(ram.group(1)) * 2**20, int(ram.group(2)) * 2**20
    return {"gpu_util": float(gr3d.group(1)) if gr3d else None, "memory_free": total - used, "memory_total": total,
            "resource_source": "tegrastats"}


def sample() -> dict:
    """{gpu_util (percent or None), memory_free, memory_total (bytes), cpu_util (percent), resource_source}."""
    data = _nvml() or _tegrastats()
    if data is None:
        vm = psutil.virtual_memory()
        data = {"gpu_util": None, "memory_free": int(vm.available), "memory_total": int(vm.total),
                "resource_source": "psutil"}
    data["cpu_util"] = psutil.cpu_percent(interval=None)  # since the previous sample: no waiting
    return data
