"""Schedules for the search step size (over inner steps) and the proximity weight (over outer iterations)."""

from __future__ import annotations

import math

__all__ = ["STEP_SCHEDULES", "LAMBDA_SCHEDULES", "step_size_at", "lambda_at"]

STEP_SCHEDULES = ("constant", "sqrt")
LAMBDA_SCHEDULES = ("none", "inverse", "exponential", "linear")


def step_size_at(base: float, step: int, schedule: str = "constant") -> float:
    """Step size of inner search step ``step`` (counted from 1).

    ``constant`` keeps ``base``; ``sqrt`` uses ``base / sqrt(step)``, the eps/sqrt(t) schedule.

    Args:
        base: the step size of the first step.
        step: the inner step index, starting at 1.
        schedule: one of ``STEP_SCHEDULES``.

    Returns:
        the step size for this step.

    Raises:
        ValueError: for an unknown schedule or a step index below 1.
    """
    if step < 1:
        raise ValueError(f"step index starts at 1, got {step}.")
    if schedule == "constant":
        return base
    if schedule == "sqrt":
        return base / math.sqrt(step)
    raise ValueError(f"unknown step schedule {schedule!r}; choose one of {STEP_SCHEDULES}.")


def lambda_at(base: float, iteration: int, total: int, schedule: str = "none", decay: float = 0.01) -> float:
    """Proximity weight lambda at outer unlearning iteration ``iteration`` (counted from 1) of ``total``.

    ``none`` keeps ``base``; ``inverse`` gives ``base / iteration``; ``exponential`` gives
    ``base * exp(-decay * iteration)``; ``linear`` decays from ``base`` to zero at ``total``:
    ``base * (1 - iteration / total)``, never below zero. As in the paper, the schedule runs over the
    outer iterations, so lambda relaxes as the model is revised.

    Args:
        base: the initial weight.
        iteration: the outer iteration index, starting at 1.
        total: the number of outer iterations planned (used by ``linear``).
        schedule: one of ``LAMBDA_SCHEDULES``.
        decay: the rate of the ``exponential`` schedule.

    Returns:
        the weight for this iteration.

    Raises:
        ValueError: for an unknown schedule or an iteration index below 1.
    """
    if iteration < 1:
        raise ValueError(f"iteration index starts at 1, got {iteration}.")
    if schedule == "none":
        return base
    if schedule == "inverse":
        return base / iteration
    if schedule == "exponential":
        return base * math.exp(-decay * iteration)
    if schedule == "linear":
        return base * max(0.0, 1.0 - iteration / max(total, 1))
    raise ValueError(f"unknown lambda schedule {schedule!r}; choose one of {LAMBDA_SCHEDULES}.")
