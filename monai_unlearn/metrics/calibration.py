"""The forget target a model that never saw the forget set would reach, estimated from held-out data alone.

A model retrained without some items treats them like unseen items of their labels, so for partial forgetting its
accuracy on the forget set is close to the original model's accuracy on held-out items of the same labels; for a
withdrawn label it is 0. The retrained model is never needed (nor used).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from monai_unlearn.core.batch import default_prepare_batch, label_index_for_image

__all__ = ["loader_labels", "per_label_accuracy", "calibration_target", "accuracy_on_labels", "weighted_target",
           "target_margin", "MARGIN_Z"]

#: the z score of ``target_margin``: a forget accuracy this many standard errors above the target is taken to be
#: above it (one-sided, about 2 % of forget sets that are treated like held-out data would be judged otherwise)
MARGIN_Z = 2.0


def loader_labels(loader: Iterable[Any], prepare_batch: Callable = default_prepare_batch) -> list[int]:
    """The class label of every item a classification loader yields, in its order."""
    labels: list[int] = []
    for batch in loader:
        image, label = prepare_batch(batch, None, False)
        labels += label_index_for_image(label, image).reshape(-1).tolist()
    return labels


@torch.no_grad()
def per_label_accuracy(
    model: torch.nn.Module, loader: Iterable[Any], device: torch.device | str | None = None,
    prepare_batch: Callable = default_prepare_batch,
) -> dict[int, tuple[int, int]]:
    """``{label: (correct, total)}`` of ``model`` over a classification loader (in eval mode; mode restored)."""
    was_training = model.training
    model.eval()
    counts: dict[int, list[int]] = {}
    try:
        for batch in loader:
            image, label = prepare_batch(batch, device, False)
            index = label_index_for_image(label, image).reshape(-1)
            logits = model(image)
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            hit = (logits.argmax(1).reshape(-1) == index).cpu()
            for value, ok in zip(index.cpu().tolist(), hit.tolist()):
                entry = counts.setdefault(int(value), [0, 0])
                entry[0] += int(ok)
                entry[1] += 1
    finally:
        model.train(was_training)
    return {label: (c, t) for label, (c, t) in counts.items()}


def accuracy_on_labels(counts: dict[int, tuple[int, int]], labels: Iterable[int] | None = None) -> float | None:
    """Pooled accuracy of ``per_label_accuracy`` counts over ``labels`` (all when ``None``); ``None`` if no item."""
    keep = None if labels is None else {int(x) for x in labels}
    correct = sum(c for label, (c, _) in counts.items() if keep is None or label in keep)
    total = sum(t for label, (_, t) in counts.items() if keep is None or label in keep)
    return correct / total if total else None


def weighted_target(per_label: dict[int, float], forget_labels: Sequence[int]) -> float:
    """The forget target: each label's target weighted by its number of forget items."""
    weights = Counter(int(x) for x in forget_labels)
    return float(sum(per_label[label] * n for label, n in weights.items()) / sum(weights.values()))


def calibration_target(
    original: torch.nn.Module,
    held_out_loader: Iterable[Any],
    forget_labels: Sequence[int],
    withdrawn_labels: Iterable[int] = (),
    device: torch.device | str | None = None,
    prepare_batch: Callable = default_prepare_batch,
    counts: dict[int, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """The forget accuracy a model that never saw the forget set would have, from held-out data.

    Each forget label contributes, weighted by its number of forget items, the original model's accuracy on the
    held-out items of that label (0 for a withdrawn label). A shared label without held-out items takes the pooled
    held-out accuracy of the shared labels (said in ``notes``).

    Args:
        original: the original model (not revised).
        held_out_loader: data the original model was not trained on (a bundle's validation data).
        forget_labels: the label of each forget item.
        withdrawn_labels: labels no kept item has.
        device: where to evaluate.
        prepare_batch: batch to ``(image, label)``.
        counts: ``per_label_accuracy(original, held_out_loader)`` when the caller has it already (it is not
            evaluated again).

    Returns:
        ``{"target", "per_label", "held_out_items", "notes"}``.

    Raises:
        ValueError: when there are no forget labels, or held-out data is needed but has no item.
    """
    if not forget_labels:
        raise ValueError("the calibration target needs the forget items' labels.")
    withdrawn = {int(x) for x in withdrawn_labels}
    if counts is None:
        counts = per_label_accuracy(original, held_out_loader, device, prepare_batch)
    shared = sorted({int(x) for x in forget_labels} - withdrawn)
    pooled = accuracy_on_labels(counts, shared)
    if shared and pooled is None:
        pooled = accuracy_on_labels(counts)
    if shared and pooled is None:
        raise ValueError("the held-out data has no items: it cannot calibrate the forget target.")
    per_label: dict[int, float] = {}
    notes: list[str] = []
    for label in sorted({int(x) for x in forget_labels}):
        if label in withdrawn:
            per_label[label] = 0.0
        elif label in counts and counts[label][1]:
            per_label[label] = counts[label][0] / counts[label][1]
        else:
            per_label[label] = float(pooled)  # type: ignore[arg-type]
            notes.append(f"no held-out item of label {label}: its target is the pooled held-out accuracy")
    return {"target": weighted_target(per_label, forget_labels), "per_label": per_label,
            "held_out_items": sum(t for _, t in counts.values()), "notes": notes}


def target_margin(
    per_label: dict[int, float], forget_labels: Sequence[int], counts: dict[int, tuple[int, int]],
    withdrawn_labels: Iterable[int] = (), z: float = MARGIN_Z,
) -> float:
    """How far above a partial target the original's forget accuracy may lie and still be the target's, given how
    few items both are measured on: ``z`` standard errors of their difference.

    If the forget items were treated like held-out items of their labels, the forget accuracy would still differ
    from the target by chance: by the binomial error of each label's accuracy on its forget items and on its held-out
    items (``counts``, as ``per_label_accuracy`` gives them; a label without held-out items has the items its pooled
    target came from). A difference within the margin shows no measurable trace of the forget set to remove. Each
    accuracy's error is taken at its target moved toward one half by two successes and two failures (Agresti and
    Coull), so that a label right on all of six held-out items is not taken to be known exactly.

    Args:
        per_label: each forget label's target (``calibration_target``'s ``per_label``).
        forget_labels: the label of each forget item.
        counts: ``{label: (correct, total)}`` of the original on the held-out data.
        withdrawn_labels: labels no kept item has: their target, 0, is exact (a model that never saw them never
            predicts them), so they add no error.
        z: standard errors in the margin.

    Returns:
        the margin (0 when every forget label is withdrawn).
    """
    weights = Counter(int(x) for x in forget_labels)
    total = sum(weights.values())
    if not total:
        return 0.0
    # what a label without held-out items was given: the pooled accuracy of the forget labels' held-out items, or of
    # all held-out items when none has the forget labels (as ``calibration_target`` pools)
    pooled_items = sum(t for label, (_, t) in counts.items() if label in weights) or sum(t for _, t in counts.values())
    withdrawn = {int(x) for x in withdrawn_labels}
    variance = 0.0
    for label, n in weights.items():
        if label in withdrawn:
            continue
        held_out = counts.get(label, (0, 0))[1] or pooled_items or 1
        p = min(max(per_label.get(label, 0.0), 0.0), 1.0)
        p = (p * held_out + 2) / (held_out + 4)
        # the forget accuracy's share of this label's error, and the target's
        variance += p * (1 - p) * (n / total**2 + (n / total) ** 2 / held_out)
    return float(z * variance**0.5)

