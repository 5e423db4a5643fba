"""Comparing an unlearned model with one retrained from scratch on the remain data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["retrain_gap", "prediction_agreement", "DEFAULT_IGNORED_KEYS"]

#: names skipped when ``retrain_gap`` compares every shared metric: sizes, spreads and per-class breakdowns.
DEFAULT_IGNORED_KEYS: tuple[str, ...] = (
    "count",
    "n",
    "n_per_group",
    "n_splits",
    "std",
    "class_counts",
    "per_class",
    "average_gap",
)


def _numeric(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _flatten(metrics: Mapping[str, Any], ignored: Sequence[str], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in metrics.items():
        if str(name) in ignored:
            continue
        path = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, ignored, prefix=f"{path}."))
        else:
            flat[path] = value
    return flat


def retrain_gap(
    metrics: Mapping[str, Any],
    retrained_metrics: Mapping[str, Any],
    keys: Sequence[str] | None = None,
) -> dict[str, float]:
    """Absolute differences between the unlearned model's metrics and the retrained model's, and their mean.

    Nested dicts are flattened with dotted names, so ``{"forget": {"accuracy": 0.1}, "mia": {"mean": 0.5}}``
    gives the keys ``"forget.accuracy"`` and ``"mia.mean"``. The mean of the gaps is the "average gap" that
    unlearning papers report (lower is better: the unlearned model behaves like the retrained one).

    Args:
        metrics: the unlearned model's metrics, e.g. ``{"forget_accuracy": .., "remain_accuracy": ..,
            "test_accuracy": .., "mia": {"mean": ..}}``.
        retrained_metrics: the same metrics of a model retrained without the forget set.
        keys: the (dotted) keys to compare. ``None`` compares every numeric key present in both, except those
            whose name appears in :data:`DEFAULT_IGNORED_KEYS` (sizes, standard deviations, per-class dicts).

    Returns:
        a dict of ``key -> |metrics[key] - retrained_metrics[key]|`` in the order of ``metrics``, plus
        ``"average_gap"``, the mean of those gaps.

    Raises:
        ValueError: when no numeric key is shared, or a requested key is missing or not numeric on either side.
    """
    if keys is None:
        ours = _flatten(metrics, DEFAULT_IGNORED_KEYS)
        theirs = _flatten(retrained_metrics, DEFAULT_IGNORED_KEYS)
        names = [k for k in ours if k in theirs and _numeric(ours[k]) is not None and _numeric(theirs[k]) is not None]
        if not names:
            raise ValueError(
                "the two metric dicts share no numeric key to compare; keys given: "
                f"{sorted(ours)} and {sorted(theirs)}."
            )
    else:
        ours, theirs = _flatten(metrics, ()), _flatten(retrained_metrics, ())
        names = list(keys)
        if not names:
            raise ValueError("`keys` is empty; give at least one metric name or None for all shared ones.")
        for name in names:
            for side, flat in (("metrics", ours), ("retrained_metrics", theirs)):
                if name not in flat:
                    raise ValueError(f"key {name!r} is missing from {side}; available: {sorted(flat)}.")
                if _numeric(flat[name]) is None:
                    raise ValueError(f"{side}[{name!r}] = {flat[name]!r} is not a number.")
    gaps = {name: abs(_numeric(ours[name]) - _numeric(theirs[name])) for name in names}  # type: ignore[operator]
    gaps["average_gap"] = float(np.mean(list(gaps.values())))
    return gaps


def prediction_agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Fraction of samples (or voxels) on which two models predict the same class.

    Args:
        logits_a: ``(N, C, *S)`` logits of one model, or ``(N, *S)`` integer predictions.
        logits_b: the other model's, of the same layout.

    Returns:
        the fraction of equal argmax predictions, in [0, 1].

    Raises:
        ValueError: when the shapes differ or the inputs are empty.
    """
    a, b = torch.as_tensor(logits_a), torch.as_tensor(logits_b)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare predictions of shapes {tuple(a.shape)} and {tuple(b.shape)}.")
    if a.numel() == 0:
        raise ValueError("cannot compare empty predictions.")
    if a.is_floating_point() and a.ndim >= 2:
        a, b = a.argmax(dim=1), b.argmax(dim=1)
    return float((a == b).float().mean())
