"""The headline numbers of an evaluation record (accuracy or Dice) and a plain-text table of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from monai_unlearn.core.batch import default_prepare_batch
from monai_unlearn.metrics.evaluation import evaluate_unlearning, summary_rows
from monai_unlearn.metrics.segmentation import (
    evaluate_segmentation,
    is_segmentation_evaluation,
    segmentation_summary_rows,
)

__all__ = ["forget_score", "forget_scorer", "format_table", "headline_rows"]


def headline_rows(evaluation: dict[str, Any]) -> dict[str, float | None]:
    """The headline numbers of an evaluation: ``summary_rows`` (accuracy) or ``segmentation_summary_rows`` (Dice)."""
    if is_segmentation_evaluation(evaluation):
        return segmentation_summary_rows(evaluation)
    return summary_rows(evaluation)


def forget_score(evaluation: dict[str, Any]) -> float | None:
    """The forget-set score a stopping rule compares: forget accuracy, or the forget Dice for segmentation."""
    rows = headline_rows(evaluation)
    return rows.get("forget_acc", rows.get("forget_dice"))


def forget_scorer(
    task: str, forget_loader: Iterable[Any], num_classes: int | None = None, device: torch.device | str | None = None,
    prepare_batch: Callable = default_prepare_batch, amp: bool = False, forget_classes: Sequence[int] | None = None,
    roi_size: Any = None,
) -> Callable[[torch.nn.Module], float]:
    """``score(network)`` for stopping rules: forget accuracy over ``forget_loader``, or for segmentation its forget
    Dice (the forgotten classes' Dice when ``forget_classes`` is given)."""
    if task == "segmentation":
        return lambda net: forget_score(evaluate_segmentation(
            net, forget_loader, None, None, num_classes, device, prepare_batch, amp, forget_classes=forget_classes,
            roi_size=roi_size))
    return lambda net: evaluate_unlearning(net, forget_loader, None, None, num_classes, device, prepare_batch, amp)[
        "forget"]["accuracy"]


def format_table(rows: dict[str, dict[str, float | None]]) -> str:
    """Format ``{row name: {column: value}}`` as an aligned text table (``-`` for missing values)."""
    if not rows:
        return ""
    columns = list(next(iter(rows.values())))
    width = max(len(name) for name in rows) + 2
    cell = {c: max(11, len(c) + 2) for c in columns}
    lines = ["".ljust(width) + "".join(c.rjust(cell[c]) for c in columns)]
    for name, values in rows.items():
        cells = "".join(("-" if values.get(c) is None else f"{values[c]:.3f}").rjust(cell[c]) for c in columns)
        lines.append(name.ljust(width) + cells)
    return "\n".join(lines)
