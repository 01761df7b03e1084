"""Temp folders that name their writer, so a crash's leftovers can be told from live work.

Results are written into a hidden sibling folder and renamed into place when complete.
A process killed mid-write leaves that folder behind; its name carries the writer's pid
and a tag of its device (MISTUDIO_DEVICE_ID), so the next writer removes the folders whose
owner is gone and never one a live process still writes into. A pid means something only on
its own device: in a run store that several devices mount, another device's temp folders are
left alone (their writer may be alive there). Untagged (older) names count as this device's.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path

import psutil

from mistudio.settings import get_settings

# .tmp-{name}-{pid}@{device tag}-{8 hex}, .old-... (a swap), the same without @{tag} (older), and
# .{name}.tmp-{pid} (the activation cache's older name).
_OWNED = re.compile(r"^\.(?:(?:tmp|old)-.+-(?P<pid>\d+)(?:@(?P<device>[0-9a-f]{8}))?-[0-9a-f]{8}"
                    r"|.+\.tmp-(?P<legacy>\d+))$")


def _device_tag() -> str:
    return hashlib.sha256(get_settings().device_id.encode()).hexdigest()[:8]


def temp_sibling(final: Path | str, kind: str = "tmp") -> Path:
    """A hidden sibling of final for this process to write into (kind: tmp, or old for a swap)."""
    final = Path(final)
    return final.with_name(f".{kind}-{final.name}-{os.getpid()}@{_device_tag()}-{uuid.uuid4().hex[:8]}")


def owner_pid(path: Path | str) -> int | None:
    """The writer's pid if it wrote on this device (None: not a temp folder, or another device's)."""
    match = _OWNED.match(Path(path).name)
    if match is None or (match["device"] and match["device"] != _device_tag()):
        return None
    return int(match["pid"] or match["legacy"])


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed writer nobody has reaped yet)."""
    if pid == os.getpid():
        return True
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # exists, another user's
        return True


def remove_abandoned(folder: Path | str) -> list[Path]:
    """Remove the temp folders under folder whose writer process no longer exists."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        pid = owner_pid(path)
        if pid is not None and path.is_dir() and not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
