"""Checks made once on a first batch, and the per-voxel class masks of label-class forgetting."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai_unlearn.core.batch import label_index_for_image
from monai_unlearn.core.unlearner import check_labels

__all__ = ["IGNORE_INDEX", "class_mask", "mask_forgotten_classes", "validate_first_batch"]

#: the label value cross-entropy ignores (PyTorch's default ``ignore_index``).
IGNORE_INDEX = -100


def class_mask(label_index: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the elements of ``label_index`` whose class is one of ``classes`` (on the same device)."""
    return torch.isin(label_index, classes)


def mask_forgotten_classes(label: torch.Tensor, image: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Label indices of a remain batch with the voxels of ``classes`` set to ``IGNORE_INDEX``.

    The remain term then does not teach the forgotten classes back.
    """
    index = label_index_for_image(label, image)
    return index.masked_fill(class_mask(index, classes), IGNORE_INDEX)


def validate_first_batch(
    reference: torch.nn.Module,
    image: torch.Tensor,
    label: torch.Tensor,
    what: str,
    forget_classes: Sequence[int] | None = None,
) -> None:
    """Check once, before the loop, that a batch fits the network: its shape, and labels within the classes.

    For segmentation outputs ``(B, C, *S)`` the label map must have the output's spatial shape, and any
    ``forget_classes`` must be classes the network outputs. This reads values on the host: call it on a first
    batch only.

    Raises:
        ValueError: naming the batch (``what``) and the problem.
    """
    try:
        with torch.no_grad():
            logits = reference(image[:2])
    except RuntimeError as error:
        raise ValueError(
            f"the network cannot process the {what} images of shape {tuple(image.shape)}: {error}"
        ) from error
    if label.shape[0] != image.shape[0]:
        raise ValueError(f"{what} batch has {image.shape[0]} images but {label.shape[0]} labels.")
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"the {what} images contain NaN or infinite values; fix or drop those images.")
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    num_classes = logits.shape[1]
    if forget_classes is not None:
        bad = [int(c) for c in forget_classes if not 0 <= int(c) < num_classes]
        if bad:
            raise ValueError(
                f"cannot forget class(es) {bad}: the network outputs {num_classes} classes (0..{num_classes - 1})."
            )
    label_index = label_index_for_image(label, image)
    if logits.ndim > 2 and tuple(label_index.shape[1:]) != tuple(logits.shape[2:]):
        raise ValueError(
            f"the {what} label maps have spatial shape {tuple(label_index.shape[1:])} (labels {tuple(label.shape)}), "
            f"which does not match the images' {tuple(image.shape[2:])} / the network output's "
            f"{tuple(logits.shape[2:])}: each label map must have its image's size."
        )
    check_labels(logits, label_index, what=f"{what} labels")
