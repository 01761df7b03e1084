"""Job ids: the one rule, checked wherever an id enters.

A job id names Redis keys and, for a training, its folder under runs_dir, so it is
checked at submit (`jobs.submit`) and again by the worker for every message it claims:
several devices share one Redis, so a queue message is input like any other.
"""

from __future__ import annotations

import re

from mistudio.errors import InvalidInput
from mistudio.validation import preview

# Letters and digits first (never "." or "-"), then also "_", "." and "-"; no "/" or "\\".
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
JOB_ID_FIX = "use letters, digits, '_', '-', '.' (max 64), starting with a letter or digit"


def is_valid_job_id(value) -> bool:
    return isinstance(value, str) and JOB_ID.fullmatch(value) is not None


def check_job_id(value, field: str = "job_id") -> str:
    if not is_valid_job_id(value):
        raise InvalidInput(field, f"{preview(value)} is not a valid id", JOB_ID_FIX)
    return value
