"""Errors miStudio raises on purpose. Their message is written for the user."""

from __future__ import annotations

PROBLEM_MAX = 400  # characters of an error's problem text: a 100 KB value is never echoed back whole


class MistudioError(Exception):
    """Base class: anything we raise deliberately, with a message that says what to do."""


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit - 40]}... ({len(text) - limit + 40:,} more characters)"


class InvalidInput(MistudioError, ValueError):
    """A value the user gave is wrong. Names the field and the fix; raised before anything is queued."""

    def __init__(self, field: str, problem: str, fix: str | None = None):
        self.field = _cut(str(field), 80)
        self.problem = _cut(str(problem), PROBLEM_MAX)
        self.fix = fix
        message = f"{self.field}: {self.problem}"
        if fix:
            message += f". Fix: {fix}"
        super().__init__(message)


class TrainingDiverged(InvalidInput):
    """The loss became NaN or infinite while training: found in the worker, the run fails (no checkpoint)."""

    def __init__(self, step: int, loss: str, lr: float):
        super().__init__(
            "lr",
            f"loss became {loss} at step {step} (lr {lr:g}); training stopped there, no checkpoint after it written",
            f"lower lr (e.g. {min(lr / 10, 4e-4):g}); if it persists, look at the activations: inf/NaN or "
            "huge values (keep normalize_activations on; load a float16 model in float32)",
        )
        self.step = step


class ServiceError(MistudioError, RuntimeError):
    """A background service (Redis, a worker) could not be started or stopped."""
