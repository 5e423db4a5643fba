"""PNG figures of an unlearning run: metric curves over iterations and per-class accuracy before/after."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["plot_curves", "plot_per_class"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    history: Sequence[Mapping[str, Any]], path: str, x_key: str = "iteration",
    keys: Sequence[str] = ("forget_accuracy", "remain_accuracy", "test_accuracy", "mia"),
) -> str:
    """Plot metric curves from a list of records (one per evaluation) and save them as a PNG.

    Args:
        history: records holding ``x_key`` and any of ``keys``; missing or ``None`` values are skipped.
        path: the PNG file to write.
        x_key: the record key for the horizontal axis.
        keys: the metrics to draw.

    Returns:
        ``path``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        points = [(r[x_key], r[key]) for r in history if r.get(key) is not None and r.get(x_key) is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", label=key.replace("_", " "))
    ax.set_xlabel(x_key)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("unlearning progress")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_per_class(
    before: Mapping[Any, float | None], after: Mapping[Any, float | None], path: str,
    class_names: Sequence[str] | None = None, title: str = "per-class accuracy",
) -> str:
    """Grouped bars of per-class accuracy before and after unlearning, saved as a PNG.

    Args:
        before: class index -> accuracy (or ``None`` when the class is absent).
        after: the same after unlearning.
        path: the PNG file to write.
        class_names: optional names for the class indices.
        title: the figure title.

    Returns:
        ``path``.
    """
    plt = _pyplot()
    classes = sorted({int(c) for c in before} | {int(c) for c in after})
    lookup = lambda d, c: d.get(c, d.get(str(c)))  # noqa: E731  (JSON round trips turn keys into strings)
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(classes) + 2), 4))
    for offset, (name, values) in zip((-width / 2, width / 2), (("before", before), ("after", after))):
        heights = [lookup(values, c) or 0.0 for c in classes]
        ax.bar([i + offset for i in range(len(classes))], heights, width, label=name)
    labels = [class_names[c] if class_names and c < len(class_names) else str(c) for c in classes]
    ax.set_xticks(range(len(classes)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
