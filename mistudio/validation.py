"""Checks shared by every task's validator, at submit and again in the worker (a message is input).

No Redis, no torch: `mistudio train` refuses bad input in well under a second.

- `name(value, field)`: an id or name that becomes one path component under MISTUDIO_HOME
  (dataset ids, splits, configs, training ids...). Letters, digits, '.', '_', '-', starting with a
  letter or digit, at most 128 characters, no '..': it can never climb out of its folder.
- `local_path(value, field)`: a path the user points at (a corpus, a model folder), checked for
  what the OS would refuse with a traceback (too long, NUL bytes).
- `preview(value)`: a value echoed in an error, cut to a short preview (`shorten` for plain text).
- `check_params(spec, params)`: the whole parameter dict of a job, as submit and run_job see it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from mistudio.errors import InvalidInput

NAME_MAX = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PATH_MAX = 4096  # Linux PATH_MAX; one component: NAME_MAX_OS
NAME_MAX_OS = 255
PREVIEW_CHARS = 60


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """repr(value), cut to about `limit` characters with the full length said."""
    text = repr(value)
    if len(text) <= limit:
        return text
    length = f"{len(value):,} characters" if isinstance(value, str) else f"{len(text):,} characters as text"
    return f"{text[:limit]}... ({length})"


def shorten(text: str, limit: int = 200) -> str:
    """Plain text (a listing) cut to about `limit` characters."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def name(value: Any, field: str) -> str:
    """A name that becomes one path component: refused unless it is plainly one (see module doc)."""
    what = field.replace("_", " ")
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, got {preview(value)} ({type(value).__name__})",
                           f"pass {field} as a {what} such as 'my-data_1'")
    if len(value) > NAME_MAX or not _NAME.fullmatch(value) or ".." in value:
        raise InvalidInput(field, f"{preview(value)} is not a valid id (the {what} names a folder)",
                           f"use letters, digits, '.', '_' and '-', starting with a letter or digit, "
                           f"no '..', at most {NAME_MAX} characters")
    return value


def optional_name(value: Any, field: str) -> str | None:
    return None if value is None else name(value, field)


def local_path(value: str | Path, field: str) -> Path:
    """A user-given path, expanded; InvalidInput where the OS would raise (too long, NUL, not text)."""
    if not isinstance(value, (str, Path)):
        raise InvalidInput(field, f"must be a path string, got {preview(value)} ({type(value).__name__})",
                           "pass the path as a string")
    text = str(value)
    if "\x00" in text:
        raise InvalidInput(field, f"{preview(text)} contains a NUL byte", "pass a plain path")
    too_long = len(os.fsencode(text)) > PATH_MAX or any(
        len(os.fsencode(part)) > NAME_MAX_OS for part in Path(text).parts)
    if too_long:
        raise InvalidInput(field, f"{preview(text)} is longer than the OS allows "
                                  f"({PATH_MAX} bytes, {NAME_MAX_OS} per folder or file name)",
                           "pass a shorter path (move or link the data closer)")
    return Path(text).expanduser()


def exists(path: Path, field: str) -> bool:
    """path.exists(), with the OS's refusals (permissions, loops) as InvalidInput."""
    try:
        return path.exists()
    except OSError as exc:
        raise InvalidInput(field, f"cannot look at {preview(str(path))}: {exc.strerror}",
                           "check the path and its permissions") from None


def check_json(params: dict) -> None:
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("params", f"must be JSON (numbers, strings, lists, dicts): {exc}",
                           "pass plain values; convert paths with str() and arrays with .tolist()") from None


def check_params(spec, params: Any) -> dict:
    """A job's parameters checked as a whole: a dict of JSON values that the task's validator accepts.

    Runs in jobs.submit and again in the worker before the task body (a message is input)."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidInput("params", f"must be a dict of parameters, got {type(params).__name__} {preview(params)}",
                           "pass keyword parameters as a dict, e.g. {'k': 32}")
    bad_key = next((k for k in params if not isinstance(k, str)), None)
    if bad_key is not None:
        raise InvalidInput("params", f"parameter names must be strings, got {preview(bad_key)}",
                           "use string keys")
    params = dict(params)
    if spec.validate is not None:
        params = spec.validate(params)
    check_json(params)
    return params


def only(params: dict, allowed, where: str) -> None:
    """Refuse parameters a task does not take (a typo would otherwise be dropped silently)."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InvalidInput(unknown[0], f"unknown parameter of {where}", f"use {', '.join(allowed)}")
