"""PNG figures of an unlearning run, drawn on matplotlib's Agg canvas (no global backend change)."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from monai.utils import optional_import

from monai_unlearn.io import atomic_write_bytes

Figure, has_matplotlib = optional_import("matplotlib.figure", name="Figure")
FigureCanvasAgg, _ = optional_import("matplotlib.backends.backend_agg", name="FigureCanvasAgg")

__all__ = ["has_matplotlib", "curves_figure", "per_class_figure", "write_png", "ACCURACY_SERIES", "LOSS_SERIES"]

ACCURACY_SERIES = (
    ("forget_accuracy", "forget accuracy"),
    ("remain_accuracy", "remain accuracy"),
    ("test_accuracy", "test accuracy"),
    ("mia", "membership inference"),
)
LOSS_SERIES = (
    ("loss", "total loss"),
    ("forget_loss", "forget loss"),
    ("remain_loss", "remain loss"),
    ("flip_rate", "boundary flip rate"),
)


def curves_figure(
    history: Sequence[Mapping[str, Any]], x_key: str = "iteration",
    series: Sequence[tuple[str, str]] = ACCURACY_SERIES, title: str = "PSG unlearning", unit_range: bool = True,
) -> Any:
    """Line plot of the ``series`` (record key, label) found in ``history`` against ``x_key``.

    Args:
        history: records, one per evaluation or pass; missing or ``None`` values are skipped.
        x_key: the record key for the horizontal axis.
        series: ``(key, label)`` pairs to draw.
        title: the figure title.
        unit_range: fix the vertical axis to [0, 1] (accuracies, attack scores).

    Returns:
        a matplotlib ``Figure``.
    """
    figure = Figure(figsize=(6.4, 4.0))
    axes = figure.add_subplot(1, 1, 1)
    for key, label in series:
        points = [(h[x_key], h[key]) for h in history if h.get(key) is not None and h.get(x_key) is not None]
        if points:
            xs, ys = zip(*points)
            axes.plot(xs, ys, marker="o", linestyle="--" if key in ("mia", "flip_rate") else "-", label=label)
    axes.set_xlabel(x_key)
    if unit_range:
        axes.set_ylim(-0.02, 1.02)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="best")
    return figure


def per_class_figure(
    before: Mapping[str, Any], after: Mapping[str, Any], class_names: Sequence[str] | None = None,
    metric: str = "accuracy",
) -> Any:
    """Grouped bars of per-class scores before and after unlearning, one panel per evaluated set.

    Args:
        before: an ``evaluate_unlearning`` result (``{"forget": {"per_class": ...}, "remain": ..., ...}``).
        after: the same after unlearning.
        class_names: optional names for the class indices.
        metric: the vertical axis label.

    Returns:
        a matplotlib ``Figure``.
    """
    splits = [s for s in ("forget", "remain", "test") if before.get(s) is not None and after.get(s) is not None]
    figure = Figure(figsize=(4.0 * max(len(splits), 1), 3.6))
    for index, split in enumerate(splits):
        axes = figure.add_subplot(1, len(splits), index + 1)
        classes = sorted({*before[split]["per_class"], *after[split]["per_class"]}, key=lambda c: int(c))
        width = 0.38
        for offset, (label, evaluation) in ((-width / 2, ("before", before)), (width / 2, ("after", after))):
            per_class = evaluation[split]["per_class"]
            values = [math.nan if per_class.get(c) is None else float(per_class[c]) for c in classes]
            positions = [i + offset for i in range(len(classes))]
            axes.bar(positions, values, width=width, label=label)
            for x, value in zip(positions, values):  # zero bars are invisible: print every value
                axes.text(x, 0.0 if math.isnan(value) else value, "n/a" if math.isnan(value) else f"{value:.2f}",
                          ha="center", va="bottom", fontsize=7)
        names = [class_names[int(c)] if class_names and int(c) < len(class_names) else str(c) for c in classes]
        axes.set_xlim(-0.6, len(classes) - 0.4)
        axes.set_xticks(range(len(classes)))
        axes.set_xticklabels(names, rotation=30 if class_names else 0, fontsize=8)
        axes.set_ylim(0.0, 1.1)
        axes.set_title(f"{split} set")
        if index == 0:
            axes.set_ylabel(metric)
            axes.legend(loc="best")
    return figure


def write_png(figure: Any, path: str | os.PathLike) -> str:
    """Render ``figure`` to PNG and write it atomically to ``path``; returns ``path``."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return str(path)
