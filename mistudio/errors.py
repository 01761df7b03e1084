"""Errors miStudio raises on purpose. Their message is written for the user."""

from __future__ import annotations


class MistudioError(Exception):
    """Base class: anything we raise deliberately, with a message that says what to do."""


class InvalidInput(MistudioError, ValueError):
    """A value the user gave is wrong. Names the field and the fix; raised before anything is queued."""

    def __init__(self, field: str, problem: str, fix: str | None = None):
        self.field = field
        self.problem = problem
        self.fix = fix
        message = f"{field}: {problem}"
        if fix:
            message += f". Fix: {fix}"
        super().__init__(message)


class ServiceError(MistudioError, RuntimeError):
    """A background service (Redis, a worker) could not be started or stopped."""
