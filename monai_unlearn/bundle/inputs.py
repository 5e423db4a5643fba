"""Screening a bundle's data before unlearning: unreadable or non-finite items stop the run or are skipped, never silently."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from monai_unlearn.bundle.audit import forgotten_item_record

__all__ = ["SCREEN_POLICIES", "screen_items"]

SCREEN_POLICIES = ("stop", "skip", "off")
logger = logging.getLogger(__name__)


def _problem(item: Mapping[str, Any], transform: Callable) -> str | None:
    try:
        data = transform(copy.deepcopy(dict(item)))
    except Exception as error:  # any reader or transform failure makes the item unusable
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    samples = data if isinstance(data, list) else [data]
    for sample in samples:
        image = sample.get("image") if isinstance(sample, Mapping) else None
        if isinstance(image, torch.Tensor) and image.is_floating_point() and not bool(torch.isfinite(image).all()):
            return "the image contains NaN or infinite values"
    return None


def screen_items(
    items: Sequence[Mapping[str, Any]], transform: Callable, policy: str = "stop", what: str = "training",
    id_key: str = "image",
) -> tuple[list[Mapping[str, Any]], list[dict[str, Any]]]:
    """Run each item through ``transform`` once and deal with the ones that fail or hold non-finite values.

    Args:
        items: datalist entries.
        transform: the bundle's preprocessing.
        policy: ``"stop"`` raises on the first bad item; ``"skip"`` drops bad items and returns them for the
            report; ``"off"`` returns the items unchecked.
        what: which set the items belong to, for messages.
        id_key: the entry key that identifies an item.

    Returns:
        the usable items, and one record per skipped item (hashed identifier and the problem).

    Raises:
        ValueError: for an unknown policy, or (``"stop"``) naming the first bad item and its problem.
    """
    if policy not in SCREEN_POLICIES:
        raise ValueError(f"unlearn_screen_inputs must be one of {SCREEN_POLICIES}, got {policy!r}.")
    if policy == "off":
        return list(items), []
    kept, skipped = [], []
    for item in items:
        problem = _problem(item, transform)
        if problem is None:
            kept.append(item)
            continue
        if policy == "stop":
            raise ValueError(
                f"{what} item {item.get(id_key)!r} cannot be used: {problem}. Fix or remove it, or pass "
                "`--unlearn_screen_inputs skip` to leave such items out (they are listed in the report)."
            )
        logger.warning("skipping %s item %r: %s", what, item.get(id_key), problem)
        skipped.append({**forgotten_item_record(item, id_key), "set": what, "problem": problem})
    return kept, skipped
