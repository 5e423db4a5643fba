"""Forget targets read off the reference model at the boundary point."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["boundary_targets", "targets_differ"]


def boundary_targets(
    boundary_logits: torch.Tensor,
    mode: str = "hard",
    temperature: float = 1.0,
    top_k: int = 2,
    label_index: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    excluded_classes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Targets for the forget samples from the reference's logits at the boundary point.

    ``hard`` gives class indices (argmax), ``soft`` a probability distribution (softmax with
    ``temperature``), ``topk`` the softmax restricted to the ``top_k`` most likely classes and renormalised.
    When ``mask`` is given (segmentation, forgetting one label class), only masked voxels take the boundary
    target; every other voxel keeps its own label from ``label_index`` (one-hot for soft targets).

    ``excluded_classes`` are classes no boundary target may take: classes withdrawn from the model, which a model
    retrained without them never predicts. Their logits are left out before the argmax or softmax, so a search
    that did not cross the boundary still gives the nearest class that stays (the one whose boundary the search
    came closest to) instead of the withdrawn label itself, which would teach the class back.

    Args:
        boundary_logits: reference logits at the boundary, ``(B, C)`` or ``(B, C, *spatial)``.
        mode: ``"hard"``, ``"soft"`` or ``"topk"``.
        temperature: softmax temperature for soft targets.
        top_k: number of classes kept by ``"topk"``.
        label_index: the true labels as indices; required with ``mask``.
        mask: optional boolean ``(B, *spatial)`` of the elements that take boundary targets.
        excluded_classes: optional ``long`` indices of classes no target may take (on the logits' device).

    Returns:
        ``long`` indices ``(B, *spatial)`` for ``hard``; probabilities ``(B, C, *spatial)`` summing to one over
        the class dimension otherwise.

    Raises:
        ValueError: for an unknown mode, a ``top_k`` above the number of classes, a mask without labels, or
            every class excluded.
    """
    num_classes = boundary_logits.shape[1]
    if mask is not None and label_index is None:
        raise ValueError("a target mask needs the true labels (label_index) for the elements it leaves out.")
    logits = boundary_logits.detach().float()
    if excluded_classes is not None and excluded_classes.numel():
        if excluded_classes.numel() >= num_classes:
            raise ValueError(f"every one of the {num_classes} classes is excluded from the targets: at least one "
                             "class must stay.")
        logits = logits.index_fill(1, excluded_classes, float("-inf"))
    if mode == "hard":
        target = logits.argmax(dim=1)
        return target if mask is None else torch.where(mask, target, label_index)
    if mode == "soft":
        target = torch.softmax(logits / temperature, dim=1)
    elif mode == "topk":
        if not 1 <= top_k <= num_classes:
            raise ValueError(f"top_k must be between 1 and the number of classes ({num_classes}), got {top_k}.")
        probs = torch.softmax(logits / temperature, dim=1)
        kept = torch.zeros_like(probs).scatter_(1, probs.topk(top_k, dim=1).indices, 1.0)
        target = probs * kept
        target = target / target.sum(dim=1, keepdim=True)
    else:
        raise ValueError(f"unknown target mode {mode!r}; choose 'hard', 'soft' or 'topk'.")
    if mask is None:
        return target
    own = F.one_hot(label_index, num_classes).movedim(-1, 1).to(target.dtype)
    return torch.where(mask.unsqueeze(1), target, own)


def targets_differ(target: torch.Tensor, label_index: torch.Tensor) -> torch.Tensor:
    """Boolean tensor, per element, of whether the target's most likely class differs from the true label."""
    hard = target if not target.is_floating_point() else target.argmax(dim=1)
    return hard != label_index
