"""Learning-rate and sparsity-coefficient schedules: pure functions of the step (resume-safe)."""

from __future__ import annotations


def lr_at(step: int, *, lr: float, total_steps: int, warmup_steps: int, decay_steps: int) -> float:
    """Linear warmup from lr/warmup to lr, constant, then linear decay to 0 over the last decay_steps.

    `step` counts from 0; the step-0 LR is not 0, so no step is wasted.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_start = total_steps - decay_steps
    if decay_steps > 0 and step >= decay_start:
        return lr * max(0.0, (total_steps - step) / decay_steps)
    return lr


def sparsity_coefficient_at(step: int, *, coefficient: float, warmup_steps: int) -> float:
    """Linear warmup of the L1/L0 weight: early on, let the dictionary learn to reconstruct first."""
    if warmup_steps > 0 and step < warmup_steps:
        return coefficient * (step + 1) / warmup_steps
    return coefficient
