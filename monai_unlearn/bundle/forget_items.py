"""Which items of a wrapped bundle's datalist are forgotten, and which task its labels make it."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from monai.bundle import ConfigParser

from monai_unlearn.bundle.task import class_index
from monai_unlearn.core.datalist_values import normalize_label
from monai_unlearn.core.forget_selector import parse_forget_selector
from monai_unlearn.core.selection import select_forget

__all__ = ["has_class_labels", "is_segmentation_datalist", "select_bundle_items", "select_segmentation_forget",
           "sliding_window_roi", "transformed_labels"]


def is_segmentation_datalist(datalist: Any) -> bool:
    """Whether a training datalist is a segmentation one: its labels are label-map file paths, not class indices."""
    for item in datalist:
        label = item.get("label") if isinstance(item, Mapping) else None
        if label is None:
            continue
        if isinstance(label, (list, tuple)) and label:
            label = label[0]
        return isinstance(label, (str, os.PathLike))
    return False


def select_segmentation_forget(
    datalist: list, selector: str, num_classes: int | None = None
) -> tuple[list, list, list[int] | None, bool]:
    """Forget and remain items of a segmentation datalist, and the label classes to forget voxel by voxel.

    ``label=k`` (or ``label=1|3``) forgets label class ``k``: its voxels take the boundary-search labels and every
    other voxel keeps its own. Alone, it applies to every training case (forget and remain items are then the
    same list, and the remain term ignores class ``k``'s voxels); with other criteria (``label=3,device=a``) only
    the selected cases forget it and the others keep it. Any other selector (``case=...``, ``device=...``, an
    ids file) forgets whole cases.

    Returns:
        ``(forget_items, remain_items, forget_classes or None, remain term ignores the forgotten classes)``.

    Raises:
        ForgetSelectionError: for a bad selection; ``ValueError`` for a class outside ``num_classes``.
    """
    kwargs = parse_forget_selector(selector)
    if "label" not in kwargs:
        for unsupported in ("label_key",):
            kwargs.pop(unsupported, None)
        forget, remain = select_forget(datalist, **kwargs)
        return list(forget), list(remain), None, True
    label = kwargs.pop("label")
    kwargs.pop("num_classes", None)
    classes = sorted({int(c) for c in (label if isinstance(label, (list, tuple, set)) else [label])})
    if num_classes is not None:
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"cannot forget class(es) {bad}: the bundle's network outputs {num_classes} classes "
                             f"(0..{num_classes - 1}).")
    if not kwargs:
        return datalist, datalist, classes, True
    forget, remain = select_forget(datalist, **kwargs)
    return list(forget), list(remain), classes, False


def sliding_window_roi(parser: ConfigParser, inferer_id: str | None) -> Any:
    """The ROI of the bundle's evaluation inferer when it is a ``SlidingWindowInferer`` (else ``None``)."""
    if not inferer_id:
        return None
    config = parser.get(inferer_id)
    if not isinstance(config, Mapping) or "SlidingWindowInferer" not in str(config.get("_target_", "")):
        return None
    roi = parser.get_parsed_content(f"{inferer_id}#roi_size")
    return list(roi) if isinstance(roi, (list, tuple)) else roi


def has_class_labels(items: Sequence[Mapping[str, Any]], label_key: str = "label") -> bool:
    """Whether every item's own ``label`` is a class (an index, a numeric string, a one-element array or one-hot),
    so forgetting by class can read it without running the bundle's transforms."""
    for item in items:
        try:
            normalize_label(item[label_key])
        except (KeyError, ValueError, TypeError):
            return False
    return True


def transformed_labels(items: Sequence[Mapping[str, Any]], transform: Callable) -> list[int | None]:
    """The class of each item as the bundle's transforms make it (e.g. from a label map and a mask value);
    ``None`` for an item that cannot be read (screening reports it)."""
    labels: list[int | None] = []
    for item in items:
        try:
            data = transform(copy.deepcopy(dict(item)))
            labels.append(class_index(data["label"]))
        except Exception:  # unreadable items are reported by the screening, not here
            labels.append(None)
    return labels


def select_bundle_items(
    items: list[Mapping[str, Any]],
    selector: str,
    task: str,
    num_classes: int | None = None,
    labels: Sequence[int | None] | None = None,
) -> tuple[list, list, list[int] | None, bool]:
    """Forget and remain items of a bundle's training data for a selector, as ``select_segmentation_forget``
    returns them (for classification the last two are ``None`` and ``True``).

    Args:
        items: the training items (positions are their indices here).
        selector: the forget selector text.
        task: ``"classification"`` or ``"segmentation"``.
        num_classes: the network's classes, when known.
        labels: classification: each item's class as the transforms make it, when the items' own labels are not
            classes (selection by ``label=`` then uses these); the returned items are the original ones.
    """
    if task == "segmentation":
        return select_segmentation_forget(list(items), selector, num_classes)
    kwargs = parse_forget_selector(selector)
    if labels is None:
        forget, remain = select_forget(items, **kwargs, num_classes=num_classes)
        return list(forget), list(remain), None, True
    labelled = [(item, label) for item, label in zip(items, labels) if label is not None]
    views = [{**item, "label": label} for item, label in labelled]
    original = {id(view): item for view, (item, _) in zip(views, labelled)}
    forget, remain = select_forget(views, **kwargs, num_classes=num_classes)
    unlabelled = [item for item, label in zip(items, labels) if label is None]  # unreadable: screening reports them
    return [original[id(v)] for v in forget], [original[id(v)] for v in remain] + unlabelled, None, True
