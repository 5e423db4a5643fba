"""Dice, per-case losses and membership inference for segmentation models, on forget, remain and test cases.

Dice follows MONAI's ``DiceMetric`` conventions: computed per case and per class from the argmax prediction,
then averaged over cases, ignoring the cases whose ground truth lacks the class (``ignore_empty=True``: such a
case has no defined Dice for that class). The background (class 0) is left out of the headline numbers by
default (``include_background=False``), as in most MONAI segmentation bundles; its Dice is still reported in
``per_class`` when ``include_background=True``.

Predictions come from the network directly, or from a sliding-window inferer when ``roi_size`` is given
(``monai.inferers.SlidingWindowInferer``), so a model trained on patches is evaluated on whole images. Only
per-case statistics are kept, never whole logit volumes, so large 3D data sets fit in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from monai_unlearn.core.batch import default_prepare_batch, labels_as_index
from monai_unlearn.distributed import gather_shards
from monai_unlearn.metrics.classification import _model_device
from monai_unlearn.metrics.membership import membership_inference_score

__all__ = [
    "dice_counts",
    "dice_from_counts",
    "collect_segmentation_stats",
    "segmentation_report",
    "evaluate_segmentation",
    "segmentation_summary_rows",
    "is_segmentation_evaluation",
]


def dice_counts(
    logits: torch.Tensor, label_index: torch.Tensor, num_classes: int, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-case, per-class ``(intersection, predicted, true)`` voxel counts of the argmax prediction.

    Args:
        logits: ``(B, C, *S)`` network output.
        label_index: ``(B, *S)`` class indices.
        num_classes: ``C``.
        valid: optional boolean ``(B, *S)``: count only these voxels.

    Returns:
        a float tensor ``(B, C, 3)``.
    """
    pred = F.one_hot(logits.argmax(dim=1), num_classes).flatten(1, -2).float()  # (B, N, C)
    true = F.one_hot(label_index.clamp(0, num_classes - 1), num_classes).flatten(1, -2).float()
    if valid is not None:
        weight = valid.flatten(1).unsqueeze(-1).float()
        pred, true = pred * weight, true * weight
    return torch.stack([(pred * true).sum(1), pred.sum(1), true.sum(1)], dim=-1)


def dice_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """Dice ``2 I / (P + T)`` per case and class from ``dice_counts``; NaN where the class is absent from the truth."""
    inter, pred, true = counts.unbind(-1)
    dice = 2 * inter / (pred + true).clamp_min(1e-8)
    return torch.where(true > 0, dice, torch.full_like(dice, float("nan")))


def _nanmean(values: torch.Tensor) -> float | None:
    finite = values[~torch.isnan(values)]
    return None if finite.numel() == 0 else float(finite.mean())


def collect_segmentation_stats(
    model: torch.nn.Module,
    loader: Iterable[Any],
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    prepare_batch: Callable[..., tuple[torch.Tensor, torch.Tensor]] = default_prepare_batch,
    amp: bool = False,
    roi_size: Sequence[int] | int | None = None,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    forget_classes: Sequence[int] | None = None,
    surface_distance: bool = False,
) -> dict[str, torch.Tensor]:
    """Run ``model`` over ``loader`` and keep per-case Dice counts and losses.

    Args:
        model: the segmentation network, output ``(B, C, *S)``.
        loader: batches of ``{"image", "label"}`` (or pairs), labels ``(B, 1, *S)`` or ``(B, *S)``.
        num_classes: ``C``; ``None`` reads it from the output.
        device: where to run (``None``: the model's device).
        prepare_batch: batch to ``(image, label)``.
        amp: autocast the forward passes.
        roi_size: when given, predict with ``SlidingWindowInferer(roi_size, sw_batch_size, overlap)``.
        sw_batch_size: windows per forward pass of the sliding-window inferer.
        overlap: overlap of the sliding windows.
        forget_classes: classes whose voxels also get their own per-case loss (``class_loss``).
        surface_distance: also compute MONAI's mean surface distance per case and class (slower).

    Returns:
        ``counts`` ``(N, C, 3)``, ``loss`` ``(N,)`` (mean cross-entropy per case), ``class_loss`` ``(N,)``
        (mean over the case's ``forget_classes`` voxels, NaN where it has none; only with ``forget_classes``),
        ``kept_counts`` ``(N, C, 3)`` (counts over the voxels not of a forgotten class; only with ``forget_classes``),
        ``surface`` ``(N, C)`` (only with ``surface_distance``).

    Raises:
        ValueError: when the loader is empty, labels do not fit the output, or labels exceed the classes.
    """
    device = torch.device(device) if device is not None else (_model_device(model) or torch.device("cpu"))
    inferer = None
    if roi_size is not None:
        from monai.inferers import SlidingWindowInferer

        inferer = SlidingWindowInferer(roi_size=roi_size, sw_batch_size=sw_batch_size, overlap=overlap)
    parts: dict[str, list[torch.Tensor]] = {"counts": [], "loss": [], "class_loss": [], "kept_counts": [], "surface": []}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                image, label = prepare_batch(batch, device, False)
                image = image.as_subclass(torch.Tensor) if isinstance(image, torch.Tensor) else image
                with torch.autocast(device_type=device.type, enabled=amp):
                    output = inferer(image, model) if inferer is not None else model(image)
                if isinstance(output, (tuple, list)):
                    output = output[0]
                logits = output.as_subclass(torch.Tensor).float()
                if logits.ndim < 3:
                    raise ValueError(f"segmentation needs outputs (B, C, *spatial), got {tuple(logits.shape)}.")
                index = labels_as_index(torch.as_tensor(label).as_subclass(torch.Tensor), logits)
                classes = num_classes or logits.shape[1]
                if logits.shape[1] != classes:
                    raise ValueError(f"num_classes={classes} but the network outputs {logits.shape[1]} channels.")
                if int(index.min()) < 0 or int(index.max()) >= classes:
                    raise ValueError(
                        f"label values span {int(index.min())}..{int(index.max())}, outside the network's classes 0..{classes - 1}."
                    )
                parts["counts"].append(dice_counts(logits, index, classes).cpu())
                voxel_loss = F.cross_entropy(logits, index, reduction="none").flatten(1)
                parts["loss"].append(voxel_loss.mean(1).cpu())
                if forget_classes:
                    forgotten = torch.isin(index, torch.as_tensor(list(forget_classes), device=index.device))
                    mask = forgotten.flatten(1)
                    masked = (voxel_loss * mask).sum(1) / mask.sum(1)
                    parts["class_loss"].append(masked.cpu())  # NaN where the case has no such voxel
                    parts["kept_counts"].append(dice_counts(logits, index, classes, ~forgotten).cpu())
                if surface_distance:
                    from monai.metrics import compute_average_surface_distance

                    pred = F.one_hot(logits.argmax(1), classes).movedim(-1, 1)
                    true = F.one_hot(index, classes).movedim(-1, 1)
                    parts["surface"].append(
                        compute_average_surface_distance(pred, true, include_background=True, symmetric=True).cpu()
                    )
    finally:
        model.train(was_training)
    if not parts["counts"]:
        raise ValueError("the loader yielded no batches: there is nothing to evaluate.")
    stats = {k: torch.cat(v) for k, v in parts.items() if v}
    # under torchrun a sharded loader gives this rank some cases: every rank gets all of them back
    return dict(zip(stats, gather_shards(loader, *stats.values())))


def segmentation_report(
    stats: dict[str, torch.Tensor], include_background: bool = False, forget_classes: Sequence[int] | None = None
) -> dict[str, Any]:
    """Dice per class and overall from ``collect_segmentation_stats``.

    Args:
        stats: the per-case statistics.
        include_background: count class 0 in ``dice`` (it is always in ``per_class`` when included).
        forget_classes: the forgotten classes; adds ``forgotten_dice`` (their mean Dice) and ``kept_dice``: the
            other evaluated classes' mean Dice over the voxels that are *not* of a forgotten class (where the
            forgotten class's voxels go is the forgetting itself, not a loss of retention), with its per-class
            values in ``kept_per_class``.

    Returns:
        ``dice`` (mean of the per-class Dice over the evaluated classes present), ``per_class`` (class ->
        case-averaged Dice, ``None`` when no case holds it), ``class_counts`` (class -> cases holding it),
        ``count`` (cases), ``mean_loss``; ``forgotten_dice``/``kept_dice`` with ``forget_classes``;
        ``surface_distance`` (class -> mean surface distance) when computed.
    """
    counts = stats["counts"]
    num_classes = counts.shape[1]
    first = 0 if include_background else 1
    dice = dice_from_counts(counts)
    per_class = {c: _nanmean(dice[:, c]) for c in range(first, num_classes)}
    present = [v for v in per_class.values() if v is not None]
    report: dict[str, Any] = {
        "dice": float(sum(present) / len(present)) if present else None,
        "per_class": per_class,
        "class_counts": {c: int((counts[:, c, 2] > 0).sum()) for c in range(first, num_classes)},
        "count": int(counts.shape[0]),
        "mean_loss": float(stats["loss"].mean()),
    }
    if forget_classes:
        forgotten = [per_class.get(c) for c in forget_classes if per_class.get(c) is not None]
        kept_counts = stats.get("kept_counts", counts)
        kept_dice = dice_from_counts(kept_counts)
        kept_per_class = {c: _nanmean(kept_dice[:, c]) for c in range(first, num_classes) if c not in set(forget_classes)}
        kept = [v for v in kept_per_class.values() if v is not None]
        report["forgotten_dice"] = float(sum(forgotten) / len(forgotten)) if forgotten else None
        report["kept_dice"] = float(sum(kept) / len(kept)) if kept else None
        report["kept_per_class"] = kept_per_class
    if "surface" in stats:
        surface = stats["surface"]
        report["surface_distance"] = {
            c: _nanmean(torch.where(torch.isinf(surface[:, c]), float("nan"), surface[:, c]))
            for c in range(first, num_classes)
        }
    return report


def evaluate_segmentation(
    model: torch.nn.Module,
    forget_loader: Iterable[Any],
    remain_loader: Iterable[Any] | None = None,
    test_loader: Iterable[Any] | None = None,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    prepare_batch: Callable[..., tuple[torch.Tensor, torch.Tensor]] = default_prepare_batch,
    amp: bool = False,
    forget_classes: Sequence[int] | None = None,
    include_background: bool = False,
    roi_size: Sequence[int] | int | None = None,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    surface_distance: bool = False,
    mia_splits: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Dice on the forget, remain and test cases and the membership-inference score of the forget cases.

    Shaped like ``evaluate_unlearning`` (``forget``/``remain``/``test`` reports and ``mia``), with ``dice`` and
    per-class Dice instead of accuracy, plus ``task="segmentation"`` and ``forget_classes``.

    The attack (``membership_inference_score``) separates per-case losses of forget cases from test cases. When
    a label class is forgotten (``forget_classes``), a case's loss is its mean cross-entropy over the voxels of
    the forgotten classes (cases without such voxels are left out); otherwise over all its voxels.

    Args:
        model: the segmentation network.
        forget_loader: batches of the forget cases (class mode: the cases holding the forgotten class).
        remain_loader: optional batches of the remain cases.
        test_loader: optional held-out batches, for the test Dice and the attack.
        num_classes: ``C`` (``None``: from the output).
        device: where to run.
        prepare_batch: batch to ``(image, label)``.
        amp: autocast.
        forget_classes: the label classes being forgotten (class mode), or ``None`` (forgetting cases).
        include_background: count class 0 in the headline Dice.
        roi_size: sliding-window ROI for inference (``None``: the whole image in one forward pass).
        sw_batch_size: sliding-window batch size.
        overlap: sliding-window overlap.
        surface_distance: also report mean surface distance per class.
        mia_splits: cross-validation folds of the attack.
        seed: seed of the attack.

    Returns:
        ``{"task": "segmentation", "forget_classes": [...] | None, "forget": report, "remain": report | None,
        "test": report | None, "mia": {...} | None}``, each report from ``segmentation_report``.
    """
    classes = list(forget_classes) if forget_classes else None
    out: dict[str, Any] = {"task": "segmentation", "forget_classes": classes}
    losses: dict[str, torch.Tensor] = {}
    for name, loader in (("forget", forget_loader), ("remain", remain_loader), ("test", test_loader)):
        if loader is None:
            out[name] = None
            continue
        stats = collect_segmentation_stats(
            model, loader, num_classes, device, prepare_batch, amp, roi_size, sw_batch_size, overlap, classes,
            surface_distance,
        )
        out[name] = segmentation_report(stats, include_background, classes)
        loss = stats["class_loss"] if classes else stats["loss"]
        losses[name] = loss[~torch.isnan(loss)]
    out["mia"] = None
    if "test" in losses and min(len(losses["forget"]), len(losses["test"])) >= mia_splits:
        out["mia"] = membership_inference_score(losses["forget"], losses["test"], n_splits=mia_splits, seed=seed)
    return out


def is_segmentation_evaluation(evaluation: dict[str, Any] | None) -> bool:
    """Whether an evaluation record came from ``evaluate_segmentation``."""
    return bool(evaluation) and evaluation.get("task") == "segmentation"


def segmentation_summary_rows(evaluation: dict[str, Any]) -> dict[str, float | None]:
    """Flatten ``evaluate_segmentation``'s output to the headline numbers of a results table.

    Forgetting cases: ``forget_dice``, ``remain_dice``, ``test_dice``, ``mia``. Forgetting a label class:
    ``forget_dice`` is the forgotten classes' Dice on the forget cases, ``kept_dice`` the other classes' Dice on
    the same cases (over the voxels not of a forgotten class), ``test_forget``/``test_kept`` the same on test
    cases, and ``mia``.
    """
    row: dict[str, float | None] = {}

    def get(name: str, key: str) -> float | None:
        report = evaluation.get(name)
        return None if report is None else report.get(key)

    if evaluation.get("forget_classes"):
        row["forget_dice"] = get("forget", "forgotten_dice")
        row["kept_dice"] = get("forget", "kept_dice")
        row["test_forget"] = get("test", "forgotten_dice")
        row["test_kept"] = get("test", "kept_dice")
    else:
        for name in ("forget", "remain", "test"):
            row[f"{name}_dice"] = get(name, "dice")
    mia = evaluation.get("mia")
    row["mia"] = None if mia is None else mia["mean"]
    return row
