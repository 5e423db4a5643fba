"""Model outputs, per-sample losses and accuracy reports for forget, remain and test data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

import torch
import torch.nn.functional as F

from monai_unlearn.core.batch import default_prepare_batch, labels_as_index
from monai_unlearn.distributed import gather_shards

__all__ = ["collect_outputs", "per_sample_loss", "accuracy_report", "evaluate_classifier"]


def _model_device(model: torch.nn.Module) -> torch.device | None:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


def _first_tensor(output: Any) -> torch.Tensor:
    """The logits tensor of a model output (a tensor, or the first element of a tuple/list, e.g. deep supervision)."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the model returned a {type(output).__name__}; expected a tensor of logits.")
    return output.as_subclass(torch.Tensor)  # drop MetaTensor metadata


def collect_outputs(
    model: torch.nn.Module,
    loader: Iterable[Any],
    device: torch.device | str | None = None,
    prepare_batch: Callable[..., tuple[torch.Tensor, torch.Tensor]] = default_prepare_batch,
    amp: bool = False,
    non_blocking: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` over ``loader`` and gather its logits and the labels on the CPU.

    The model runs in eval mode under ``torch.no_grad()``; its previous train/eval mode is restored
    afterwards, also when an error occurs.

    Args:
        model: the network; its output, or the first element of a tuple output, is taken as logits.
        loader: an iterable of batches (a ``DataLoader``, a list of batches, ...).
        device: where to run; ``None`` uses the device of the model's parameters.
        prepare_batch: turns a batch into ``(image, label)``, called as ``prepare_batch(batch, device,
            non_blocking)``; the default reads MONAI dict batches and ``(image, label)`` pairs.
        amp: run the forward pass under ``torch.autocast``. Logits are returned as float32.
        non_blocking: passed to ``prepare_batch``.

    Returns:
        ``(logits, labels)``: logits of shape ``(N, C, *S)`` (float32) and labels as class indices of shape
        ``(N, *S)`` (long), concatenated over all batches. Under ``torch.distributed``, a loader with a
        ``DistributedSampler`` is gathered from every rank back into the dataset's order.

    Raises:
        ValueError: when the loader yields no batch, or labels do not fit the logits.
        TypeError: when the model does not return a tensor.
    """
    if device is None:
        device = _model_device(model)
    device = torch.device(device) if device is not None else torch.device("cpu")
    was_training = model.training
    logits_parts: list[torch.Tensor] = []
    label_parts: list[torch.Tensor] = []
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                image, label = prepare_batch(batch, device, non_blocking)
                with torch.autocast(device_type=device.type, enabled=amp):
                    logits = _first_tensor(model(image))
                label = labels_as_index(label.as_subclass(torch.Tensor), logits)
                logits_parts.append(logits.float().cpu())
                label_parts.append(label.cpu())
    finally:
        model.train(was_training)
    if not logits_parts:
        raise ValueError("the loader yielded no batches: there is nothing to evaluate.")
    # under torchrun a sharded loader gives this rank part of the data: every rank gets all of it back
    return gather_shards(loader, torch.cat(logits_parts), torch.cat(label_parts))


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each sample.

    Args:
        logits: ``(N, C)`` for classification or ``(N, C, *S)`` for segmentation.
        labels: class indices, ``(N, 1, ...)`` or one-hot labels (see ``labels_as_index``).

    Returns:
        a float tensor of shape ``(N,)``; for segmentation, each entry is the mean over the sample's voxels.

    Raises:
        ValueError: when ``logits`` has fewer than two dimensions or the labels do not fit.
    """
    if logits.ndim < 2:
        raise ValueError(f"logits must have shape (N, C, ...), got {tuple(logits.shape)}.")
    index = labels_as_index(labels, logits)
    loss = F.cross_entropy(logits.float(), index, reduction="none")
    return loss.reshape(loss.shape[0], -1).mean(dim=1) if loss.ndim > 1 else loss


def accuracy_report(logits: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> dict[str, Any]:
    """Overall and per-class accuracy of the argmax prediction.

    For segmentation logits ``(N, C, *S)`` accuracies are counted over voxels; per-class accuracy is then the
    fraction of the class's voxels predicted as that class (its recall).

    Args:
        logits: ``(N, C)`` or ``(N, C, *S)``.
        labels: class indices, ``(N, 1, ...)`` or one-hot labels.
        num_classes: the number of classes; ``None`` takes ``logits.shape[1]``. Classes with no sample get
            ``None`` in ``per_class``.

    Returns:
        a dict with ``accuracy`` (float), ``per_class`` (class index -> accuracy or ``None``),
        ``class_counts`` (class index -> number of labelled elements) and ``count`` (number of samples).

    Raises:
        ValueError: on empty input, a ``num_classes`` that does not match the logits, or labels outside
            ``0..num_classes-1``.
    """
    if logits.ndim < 2 or logits.shape[0] == 0:
        raise ValueError(f"accuracy needs non-empty logits of shape (N, C, ...), got {tuple(logits.shape)}.")
    if num_classes is None:
        num_classes = int(logits.shape[1])
    if logits.shape[1] != num_classes:
        raise ValueError(f"num_classes={num_classes} but the logits have {logits.shape[1]} channels.")
    index = labels_as_index(labels, logits).reshape(-1)
    if index.numel() and (index.min() < 0 or index.max() >= num_classes):
        raise ValueError(
            f"labels span {int(index.min())}..{int(index.max())}, outside the valid range 0..{num_classes - 1}."
        )
    pred = logits.argmax(dim=1).reshape(-1)
    correct = pred == index
    totals = torch.bincount(index, minlength=num_classes)
    hits = torch.bincount(index[correct], minlength=num_classes)
    per_class = {c: (float(hits[c]) / float(totals[c]) if int(totals[c]) > 0 else None) for c in range(num_classes)}
    return {
        "accuracy": float(correct.float().mean()),
        "per_class": per_class,
        "class_counts": {c: int(totals[c]) for c in range(num_classes)},
        "count": int(logits.shape[0]),
    }


def evaluate_classifier(
    model: torch.nn.Module,
    loader: Iterable[Any],
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    prepare_batch: Callable[..., tuple[torch.Tensor, torch.Tensor]] = default_prepare_batch,
    amp: bool = False,
) -> dict[str, Any]:
    """Accuracy report and mean cross-entropy of ``model`` on ``loader``.

    Args:
        model: the network.
        loader: an iterable of batches.
        num_classes: see :func:`accuracy_report`.
        device: see :func:`collect_outputs`.
        prepare_batch: see :func:`collect_outputs`.
        amp: see :func:`collect_outputs`.

    Returns:
        the :func:`accuracy_report` dict plus ``mean_loss`` (float).

    Raises:
        ValueError: when the loader is empty or labels do not fit the outputs.
    """
    logits, labels = collect_outputs(model, loader, device=device, prepare_batch=prepare_batch, amp=amp)
    report = accuracy_report(logits, labels, num_classes)
    report["mean_loss"] = float(per_sample_loss(logits, labels).mean())
    return report
