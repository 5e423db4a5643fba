"""Which kind of forgetting a request is, from the forget and remain data: the shape decides the right stop.

- ``class``: no kept item has any forgotten item's label (a diagnosis class withdrawn, or a device that was the only
  source of its class). A model retrained without the data cannot predict those classes: forget until the forget
  items are no longer given their labels.
- ``partial``: kept items still have the forgotten items' labels (patients withdraw consent, one of several
  scanners of a class is retired). A retrained model still recognises most forget items, about as well as unseen
  items of their labels: forget until they look like held-out data, not until they are wrong.
- ``segmentation_class``: label classes withdrawn voxel by voxel.
- ``segmentation_cases``: whole cases (or one scanner's cases) withdrawn from a segmenter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["REGIMES", "FIXED", "RegimeDecision", "decide_regime", "resolve_regime"]

REGIMES = ("class", "partial", "segmentation_class", "segmentation_cases")
#: the name of "no regime": a fixed number of passes
FIXED = "fixed"

logger = logging.getLogger(__name__)


@dataclass
class RegimeDecision:
    """The regime of a forget request and why.

    Attributes:
        regime: one of ``REGIMES``.
        reason: a sentence for the log, the report and the audit.
        withdrawn_labels: forgotten labels that no kept item has (classification), or the label classes withdrawn
            voxel by voxel (segmentation).
        shared_labels: forgotten labels that kept items still have (classification).
        requested: whether the user set the regime rather than it being decided from the data.
    """

    regime: str
    reason: str
    withdrawn_labels: list[int] = field(default_factory=list)
    shared_labels: list[int] = field(default_factory=list)
    requested: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The decision as a JSON-serialisable dictionary."""
        return asdict(self)


def decide_regime(
    forget_labels: Iterable[int] | None = None,
    remain_labels: Iterable[int] | None = None,
    task: str = "classification",
    forget_classes: Sequence[int] | None = None,
    requested: str | None = None,
) -> RegimeDecision:
    """Decide the regime of a forget request from its data (or take the one the user set).

    Args:
        forget_labels: classification: the class of each forget item.
        remain_labels: classification: the class of each kept item.
        task: ``"classification"`` or ``"segmentation"``.
        forget_classes: segmentation: the label classes forgotten voxel by voxel (``None``: whole cases).
        requested: a regime to use instead of deciding (``unlearn_regime``); checked against the task.

    Returns:
        the decision, with the labels that are withdrawn and those that survive.

    Raises:
        ValueError: for an unknown task or regime, a requested regime that does not fit the task, or
            classification without forget labels.
    """
    if task not in ("classification", "segmentation"):
        raise ValueError(f"unknown task {task!r}; choose 'classification' or 'segmentation'.")
    if requested is not None and requested not in REGIMES:
        raise ValueError(f"unknown regime {requested!r}; choose one of {REGIMES} (or leave it to be decided).")
    if task == "segmentation":
        decided = "segmentation_class" if forget_classes else "segmentation_cases"
        withdrawn = sorted({int(c) for c in forget_classes}) if forget_classes else []
        reason = (f"label class(es) {withdrawn} are withdrawn voxel by voxel" if withdrawn
                  else "whole cases are withdrawn from a segmenter")
        if requested is not None:
            if not requested.startswith("segmentation"):
                raise ValueError(f"regime {requested!r} is for classification; this bundle is a segmenter.")
            return RegimeDecision(requested, f"set by the user ({reason})", withdrawn, requested=True)
        return RegimeDecision(decided, reason, withdrawn)
    forget = [int(c) for c in (forget_labels or [])]
    if not forget:
        raise ValueError("deciding the regime needs the forget items' labels.")
    kept = {int(c) for c in (remain_labels or [])}
    withdrawn = sorted(set(forget) - kept)
    shared = sorted(set(forget) & kept)
    if not shared:
        decided, reason = "class", f"no kept item has label(s) {withdrawn}: the class(es) are withdrawn"
    else:
        decided = "partial"
        reason = f"kept items still have label(s) {shared}: the forget items should look like unseen data of them"
        if withdrawn:
            reason += f"; label(s) {withdrawn} are withdrawn entirely"
    if requested is not None:
        if requested.startswith("segmentation"):
            raise ValueError(f"regime {requested!r} is for segmentation; this bundle is a classifier.")
        return RegimeDecision(requested, f"set by the user (the data says: {reason})", withdrawn, shared, True)
    return RegimeDecision(decided, reason, withdrawn, shared)


def resolve_regime(
    regime: str | None, stop_at_forget_accuracy: float | None = None, task: str = "classification",
    has_remain: bool = True, distributed: bool = False, names: tuple[str, str] = ("regime", "stop_at_forget_accuracy"),
) -> str | None:
    """The regime a run uses: ``None`` for fixed passes, else ``"auto"`` or one of ``REGIMES``.

    ``"auto"`` (the default of ``unlearn`` and the bundle) gives way to a forget-accuracy target the user set, to
    fixed passes for a classifier without remain data (the kept items' labels decide the regime), and to fixed
    passes under ``torch.distributed`` (each rank holds a shard of the data: the calibration and the checks would
    differ between ranks, and so would their decision to stop). ``"fixed"`` and ``None`` mean fixed passes.
    ``names``: how the caller calls the two settings in error messages (the bundle's ``unlearn_regime`` ...).

    Raises:
        ValueError: for an unknown regime, a named regime together with ``stop_at_forget_accuracy``, or a named
            regime under ``torch.distributed``.
    """
    if regime is None or regime == FIXED:
        return None
    if regime != "auto" and regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; choose 'auto', {FIXED!r} or one of {REGIMES}.")
    if stop_at_forget_accuracy is not None:
        if regime != "auto":
            raise ValueError(f"give {names[0]} or {names[1]}, not both: a regime sets its own target.")
        return None
    if distributed:
        if regime != "auto":
            raise ValueError(f"regime {regime!r} is not supported under torch.distributed yet (each rank would "
                             "calibrate and stop on its own shard); use regime='fixed' or run in one process.")
        logger.warning("regime: the calibrated stop is not supported under torch.distributed yet; running a fixed "
                       "number of passes.")
        return None
    if regime == "auto" and task == "classification" and not has_remain:
        logger.info("regime: no remain data to decide the regime from; running a fixed number of passes.")
        return None
    return regime
