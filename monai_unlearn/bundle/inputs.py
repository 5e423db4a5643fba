"""Screening a bundle's data before unlearning: unreadable or non-finite items stop the run or are skipped, never silently."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from monai_unlearn.bundle.audit import forgotten_item_record

__all__ = ["SCREEN_POLICIES", "ShapeCheck", "screen_items"]

SCREEN_POLICIES = ("stop", "skip", "off")
logger = logging.getLogger(__name__)


def _load(item: Mapping[str, Any], transform: Callable) -> tuple[str | None, torch.Tensor | None]:
    """The item's problem (``None`` when usable) and its (first) preprocessed image."""
    try:
        data = transform(copy.deepcopy(dict(item)))
    except Exception as error:  # any reader or transform failure makes the item unusable
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}", None
    first = None
    for sample in data if isinstance(data, list) else [data]:
        image = sample.get("image") if isinstance(sample, Mapping) else None
        if isinstance(image, torch.Tensor):
            first = image if first is None else first
            if image.is_floating_point() and not bool(torch.isfinite(image).all()):
                return "the image contains NaN or infinite values", image
    return None, first


class ShapeCheck:
    """Images must fit the network: the first readable image is run through ``probe`` (one forward pass), and
    every later image must have its shape (``match="shape"``, for classifiers that batch whole images) or its
    channel count (``match="channels"``, for segmenters whose images may differ in size)."""

    def __init__(self, probe: Callable[[torch.Tensor], Any], match: str = "shape") -> None:
        if match not in ("shape", "channels"):
            raise ValueError(f"match must be 'shape' or 'channels', got {match!r}.")
        self.probe, self.match, self.reference = probe, match, None

    def problem(self, image: torch.Tensor | None) -> str | None:
        """Why ``image`` (preprocessed, without batch axis) does not fit the network, or ``None``."""
        if image is None:
            return None
        shape = tuple(image.shape)
        if self.reference is None:
            try:
                self.probe(image.as_subclass(torch.Tensor)[None])
            except Exception as error:
                return f"the network cannot process an image of shape {shape}: {str(error).splitlines()[0]}"
            self.reference = shape
            return None
        got, want = (shape, self.reference) if self.match == "shape" else (shape[:1], self.reference[:1])
        if got != want:
            what = "shape" if self.match == "shape" else "channel count"
            return f"its image {what} {got} differs from {want}, which the network was checked with"
        return None


def screen_items(
    items: Sequence[Mapping[str, Any]], transform: Callable, policy: str = "stop", what: str = "training",
    id_key: str = "image", shapes: ShapeCheck | None = None,
) -> tuple[list[Mapping[str, Any]], list[dict[str, Any]]]:
    """Run each item through ``transform`` once and deal with the ones that fail, hold non-finite values, or
    (with ``shapes``) do not fit the network.

    Args:
        items: datalist entries.
        transform: the bundle's preprocessing.
        policy: ``"stop"`` raises on the first bad item; ``"skip"`` drops bad items and returns them for the
            report; ``"off"`` returns the items unchecked.
        what: which set the items belong to, for messages.
        id_key: the entry key that identifies an item.
        shapes: a :class:`ShapeCheck` shared by the forget, remain and validation sets.

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
        problem, image = _load(item, transform)
        if problem is None and shapes is not None:
            problem = shapes.problem(image)
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
