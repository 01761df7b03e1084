"""Checkpoints: weights + cfg.json + full trainer state, written atomically, last N kept.

Layout: run_dir/checkpoints/step_000001200/{cfg.json, sae.safetensors,
trainer_state.safetensors, trainer_state.json}. A checkpoint is written into a hidden temp
folder, fsynced, offered to `before_commit(step)` (the queue layer's fence: it refuses
writes under a lost lease), then renamed into place, so a crash never leaves a partial
`step_*` folder; temp folders carry their writer's pid (mistudio.tempdirs), so the next
save removes a killed writer's leftovers and never a live one's. Trainer state holds no pickles: tensors go to safetensors, the rest to
JSON with placeholders, so loading a checkpoint cannot execute code.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from mistudio.errors import MistudioError
from mistudio.runs import CHECKPOINTS  # the run folder's layout: mistudio/runs.py
from mistudio.tempdirs import remove_abandoned, temp_sibling
FILES = ("cfg.json", "sae.safetensors", "trainer_state.safetensors", "trainer_state.json")


class CommitRefused(MistudioError, RuntimeError):
    """`before_commit` refused a write (e.g. the job's lease was lost): nothing was committed."""


def checkpoint_dir(run_dir: Path | str, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:09d}"


def list_checkpoints(run_dir: Path | str) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if p.is_dir() and all((p / f).is_file() for f in FILES)]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: Path | str) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def latest_step(run_dir: Path | str) -> int:
    """The step of the newest complete checkpoint in run_dir (0: none)."""
    latest = latest_checkpoint(run_dir)
    return int(latest.name.split("_")[1]) if latest is not None else 0


def commit_dir(tmp: Path, final: Path, step: int, before_commit: Callable[[int], bool] | None) -> None:
    """Rename a fully written temp folder into place, if the fence allows it."""
    _fsync_tree(tmp)
    if before_commit is not None and before_commit(step) is False:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CommitRefused(f"before_commit refused step {step}; {final} was not written")
    old = None
    if final.exists():  # same step written before (e.g. a re-run): swap, then drop the old one
        old = temp_sibling(final, "old")
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(
    run_dir: Path | str,
    step: int,
    weights: dict[str, torch.Tensor],
    config_json: dict,
    state: dict,
    *,
    keep: int = 2,
    before_commit: Callable[[int], bool] | None = None,
) -> Path:
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(run_dir, step)
    tmp = temp_sibling(final)
    tmp.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, tmp / "sae.safetensors")
        tensors: dict[str, torch.Tensor] = {}
        encoded = _encode(state, tensors, "state")
        save_file(tensors, tmp / "trainer_state.safetensors")
        (tmp / "trainer_state.json").write_text(json.dumps(encoded))
        (tmp / "cfg.json").write_text(json.dumps(config_json, indent=2))
        commit_dir(tmp, final, step, before_commit)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(root, keep)
    return final


def load_checkpoint(path: Path | str) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(config JSON, SAE weights, trainer state) of one checkpoint folder."""
    path = Path(path)
    config_json = json.loads((path / "cfg.json").read_text())
    weights = load_file(path / "sae.safetensors")
    tensors = load_file(path / "trainer_state.safetensors")
    state = _decode(json.loads((path / "trainer_state.json").read_text()), tensors)
    return config_json, weights, state


def _prune(root: Path, keep: int) -> None:
    remove_abandoned(root)  # temp folders of writers killed mid-write
    done = sorted((p for p in root.glob("step_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1]))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _encode(obj: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, tensors, f"{key}.{k}") for k, v in obj.items()}
        if all(isinstance(k, int) for k in obj):  # optimizer state is keyed by parameter index
            return {"__intkeys__": {str(k): _encode(v, tensors, f"{key}.{k}") for k, v in obj.items()}}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {key} in a checkpoint (tensors and JSON values only)")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__intkeys__"}:
            return {int(k): _decode(v, tensors) for k, v in obj["__intkeys__"].items()}
        if set(obj) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
