"""One evaluation of a model on forget, remain and test data, the same for every method."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from monai_unlearn.core.batch import default_prepare_batch
from monai_unlearn.metrics.classification import accuracy_report, collect_outputs, per_sample_loss
from monai_unlearn.metrics.membership import membership_inference_score

__all__ = ["evaluate_unlearning", "summary_rows"]


def evaluate_unlearning(
    model: torch.nn.Module,
    forget_loader: Iterable[Any],
    remain_loader: Iterable[Any] | None = None,
    test_loader: Iterable[Any] | None = None,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    prepare_batch: Callable[..., tuple[torch.Tensor, torch.Tensor]] = default_prepare_batch,
    amp: bool = False,
    mia_splits: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy on the forget, remain and test sets, and the membership-inference score of the forget set.

    The membership-inference attack (``membership_inference_score``) separates forget losses from test
    losses; it needs a test loader and at least ``mia_splits`` samples on each side, otherwise ``mia`` is
    ``None``.

    Args:
        model: the network to evaluate.
        forget_loader: batches of the forget set.
        remain_loader: optional batches of the remain set (or a sample of it).
        test_loader: optional held-out batches, never trained on.
        num_classes: number of classes (``None``: the logits' channel count).
        device: where to run (``None``: the model's device).
        prepare_batch: batch to ``(image, label)``.
        amp: autocast the forward passes.
        mia_splits: cross-validation folds of the attack.
        seed: seed of the attack's subsampling and folds.

    Returns:
        ``{"forget": report, "remain": report | None, "test": report | None, "mia": {"mean", "std", ...} | None}``
        where each report holds ``accuracy``, ``per_class``, ``count`` and ``mean_loss``.
    """
    out: dict[str, Any] = {}
    losses: dict[str, torch.Tensor] = {}
    for name, loader in (("forget", forget_loader), ("remain", remain_loader), ("test", test_loader)):
        if loader is None:
            out[name] = None
            continue
        logits, labels = collect_outputs(model, loader, device=device, prepare_batch=prepare_batch, amp=amp)
        report = accuracy_report(logits, labels, num_classes)
        losses[name] = per_sample_loss(logits, labels)
        report["mean_loss"] = float(losses[name].mean())
        out[name] = report
    out["mia"] = None
    if "test" in losses and min(len(losses["forget"]), len(losses["test"])) >= mia_splits:
        out["mia"] = membership_inference_score(losses["forget"], losses["test"], n_splits=mia_splits, seed=seed)
    return out


def summary_rows(evaluation: dict[str, Any]) -> dict[str, float | None]:
    """Flatten ``evaluate_unlearning``'s output to the headline numbers of a results table."""
    row: dict[str, float | None] = {}
    for name in ("forget", "remain", "test"):
        report = evaluation.get(name)
        row[f"{name}_acc"] = None if report is None else report["accuracy"]
    mia = evaluation.get("mia")
    row["mia"] = None if mia is None else mia["mean"]
    return row
