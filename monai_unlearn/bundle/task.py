"""Classification or segmentation, from what the wrapped bundle produces: its network's output on one transformed
item and that item's transformed label (not from file names in the datalist)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["TASKS", "detect_task", "class_index"]

TASKS = ("classification", "segmentation")


def class_index(label: Any) -> int | None:
    """The class a transformed classification label stands for (an index, a one-element tensor or a one-hot
    vector), or ``None`` when it is not one."""
    tensor = torch.as_tensor(label)
    if tensor.numel() == 1:
        value = float(tensor.reshape(()))
        return int(value) if value.is_integer() else None
    if tensor.ndim == 1 and bool(((tensor == 0) | (tensor == 1)).all()) and int(tensor.sum()) == 1:
        return int(tensor.argmax())
    return None


def _label_kind(label: Any, spatial: tuple[int, ...]) -> str:
    tensor = torch.as_tensor(label)
    if tuple(tensor.shape[-len(spatial):]) == spatial and tensor.ndim in (len(spatial), len(spatial) + 1):
        return "map"
    return "class" if class_index(label) is not None else "other"


def detect_task(network: torch.nn.Module, image: torch.Tensor, label: Any, device: torch.device | str,
                requested: str | None = None) -> tuple[str, str]:
    """The task of a bundle and why, from one transformed item (``image`` without a batch axis, and ``label``).

    A network output ``(B, C)`` with a class label (index, one-element or one-hot) is classification; an output
    ``(B, C, *S)`` with a label map of the image's spatial size ``S`` is segmentation.

    Args:
        network: the bundle's network (evaluated once, without gradients).
        image: the transformed image, channel first.
        label: the transformed label.
        device: where the network is.
        requested: ``"classification"`` or ``"segmentation"`` to override the detection (``unlearn_task``); the
            network's output must still fit it.

    Returns:
        ``(task, reason)``.

    Raises:
        ValueError: for an unknown ``requested`` task, a label that fits neither task, or output and label (or the
            requested task) that disagree; the message says what was found and how to say the task.
    """
    if requested is not None and requested not in TASKS:
        raise ValueError(f"unlearn_task must be one of {TASKS} (or null to detect it), got {requested!r}.")
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            output = network(torch.as_tensor(image)[None].to(device))
    finally:
        network.train(was_training)
    if isinstance(output, (tuple, list)):
        output = output[0]
    spatial = tuple(image.shape[1:])
    produces = "segmentation" if output.ndim > 2 else "classification"
    what_out = f"the network outputs shape {tuple(output.shape)} for an image of shape {tuple(image.shape)}"
    if requested is not None:
        if requested != produces:
            raise ValueError(f"unlearn_task is {requested!r}, but {what_out}, which is {produces}.")
        return requested, f"set by unlearn_task ({what_out})"
    if label is None:
        raise ValueError(f"the transformed training item has no 'label'; {what_out}. Say the task with "
                         "`--unlearn_task classification|segmentation` and check the bundle's preprocessing.")
    kind = _label_kind(label, spatial)
    what_label = f"the transformed label has shape {tuple(torch.as_tensor(label).shape)}"
    if produces == "classification" and kind == "class":
        return produces, f"{what_out} (class scores) and {what_label} (a class)"
    if produces == "segmentation" and kind == "map":
        return produces, f"{what_out} (per-voxel scores) and {what_label} (a label map of the image's size)"
    if produces == "segmentation" and torch.as_tensor(label).ndim >= len(spatial):
        raise ValueError(f"{what_out} (per-voxel scores), but {what_label}, which does not match the images' "
                         f"spatial shape {spatial}: each label map must have its image's size.")
    raise ValueError(f"cannot tell the task: {what_out} ({produces}), but {what_label}, which is not "
                     f"{'a class' if produces == 'classification' else 'a label map of the image size'}. Check "
                     "the bundle's preprocessing (`--unlearn_keys#preprocessing`) or say the task with "
                     "`--unlearn_task classification|segmentation`.")
