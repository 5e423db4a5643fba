"""Turning whatever a data loader yields into an ``(image, label)`` pair on a device."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable

import torch

__all__ = ["cycle", "default_prepare_batch", "PrepareBatch", "labels_as_index", "label_index_for_image"]

PrepareBatch = Callable[[Any, "torch.device | str | None", bool], "tuple[torch.Tensor, torch.Tensor]"]


def default_prepare_batch(
    batchdata: Any, device: torch.device | str | None = None, non_blocking: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(image, label)`` from a MONAI dictionary batch or an ``(image, label)`` sequence.

    Dictionary batches use MONAI's ``CommonKeys`` (``"image"`` and ``"label"``), as ``monai.engines``
    does. Tensors are moved to ``device`` when one is given.

    Args:
        batchdata: a mapping with ``"image"`` and ``"label"`` keys, or a sequence ``(image, label, ...)``.
        device: where to move the tensors; ``None`` leaves them where they are.
        non_blocking: passed to ``Tensor.to``.

    Returns:
        the image tensor and the label tensor.

    Raises:
        KeyError: when a mapping batch lacks ``"image"`` or ``"label"``.
        TypeError: when the batch is neither a mapping nor a sequence of at least two items.
    """
    if isinstance(batchdata, Mapping):
        missing = [k for k in ("image", "label") if k not in batchdata]
        if missing:
            raise KeyError(
                f"batch is missing key(s) {missing}; present keys: {sorted(map(str, batchdata))}. "
                "Pass a `prepare_batch` callable for other layouts."
            )
        image, label = batchdata["image"], batchdata["label"]
    elif isinstance(batchdata, Sequence) and not isinstance(batchdata, (str, bytes)) and len(batchdata) >= 2:
        image, label = batchdata[0], batchdata[1]
    else:
        raise TypeError(f"cannot find (image, label) in a batch of type {type(batchdata).__name__}.")
    image = torch.as_tensor(image)
    label = torch.as_tensor(label)
    if device is not None:
        image = image.to(device=device, non_blocking=non_blocking)
        label = label.to(device=device, non_blocking=non_blocking)
    return image, label


def labels_as_index(label: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Bring class labels to the integer index layout that ``cross_entropy`` expects for ``logits``.

    Classification: logits ``(B, C)``; labels ``(B,)``, ``(B, 1)`` or one-hot ``(B, C)`` become ``(B,)``.
    Segmentation: logits ``(B, C, *S)``; labels ``(B, *S)``, ``(B, 1, *S)`` or one-hot ``(B, C, *S)``
    become ``(B, *S)``.

    Args:
        label: the labels as the data pipeline produced them.
        logits: the network output the labels belong to.

    Returns:
        a ``long`` tensor of class indices.

    Raises:
        ValueError: when the label layout does not fit the logits.
    """
    num_classes = logits.shape[1]
    spatial = tuple(logits.shape[2:])
    batch = logits.shape[0]
    label = torch.as_tensor(label, device=logits.device)
    if label.ndim == 0 or label.shape[0] != batch:
        raise ValueError(f"labels of shape {tuple(label.shape)} do not match a batch of {batch} outputs.")
    if tuple(label.shape[1:]) == spatial:
        index = label
    elif label.ndim == logits.ndim and label.shape[1] == 1 and tuple(label.shape[2:]) == spatial:
        index = label[:, 0]
    elif label.ndim == logits.ndim and label.shape[1] == num_classes and num_classes > 1 and label.is_floating_point():
        index = label.argmax(dim=1)
    else:
        raise ValueError(
            f"labels of shape {tuple(label.shape)} do not fit network output of shape {tuple(logits.shape)}: "
            f"expected {(batch, *spatial)}, {(batch, 1, *spatial)} or one-hot {(batch, num_classes, *spatial)}."
        )
    return index.long()


def label_index_for_image(label: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Class-index labels for a batch, inferred from the image layout (no network output needed).

    Classification: labels ``(B,)``, ``(B, 1)`` or one-hot ``(B, C)`` become ``(B,)``. Segmentation (labels
    with the image's spatial size): ``(B, 1, *S)`` or one-hot ``(B, C, *S)`` become ``(B, *S)``.

    Args:
        label: labels as the pipeline produced them.
        image: the batch's images ``(B, channels, *spatial)``.

    Returns:
        a ``long`` tensor of class indices.

    Raises:
        ValueError: when the labels' batch size differs from the images'.
    """
    label = torch.as_tensor(label, device=image.device)
    if label.ndim == 0 or label.shape[0] != image.shape[0]:
        raise ValueError(f"labels of shape {tuple(label.shape)} do not match {image.shape[0]} images.")
    if label.ndim == image.ndim or (label.ndim == 2 and image.ndim > 2):
        # a channel dimension: single-channel indices or one-hot
        if label.shape[1] == 1:
            return label[:, 0].long()
        if label.is_floating_point():
            return label.argmax(dim=1)
    return label.long()


def cycle(loader: Iterable[Any]) -> Iterator[Any]:
    """Iterate ``loader`` forever, starting a new pass (and a new shuffle) whenever one ends.

    Raises:
        ValueError: when a pass yields no batches.
    """
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yielded no batches.")
