"""The outer objective: a forget term toward the boundary targets plus phi times a remain term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["forget_loss", "remain_loss", "soft_cross_entropy", "distillation_loss", "withdrawn_loss"]


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to a probability distribution over the class dimension (dim 1), averaged over the rest."""
    return -(target_probs * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def forget_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the revised model's ``logits`` to the boundary ``target`` (indices or probabilities)."""
    if target.is_floating_point():
        return soft_cross_entropy(logits, target)
    return F.cross_entropy(logits.float(), target)


def withdrawn_loss(logits: torch.Tensor, withdrawn: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``-log(1 - p_withdrawn)``: how much probability the model still gives the withdrawn classes, averaged.

    A model retrained without a class gives it almost no probability anywhere; the boundary targets only make
    another class win on the forget items, so the withdrawn class keeps much of its probability there (its loss
    stays low, and a membership attack tells the items apart). This term drives that probability toward 0.
    Computed as ``logsumexp`` over all classes minus ``logsumexp`` over the kept ones, stable for any logits.

    Args:
        logits: ``(B, C)`` or ``(B, C, *spatial)``.
        withdrawn: index tensor of the withdrawn classes (on ``logits``' device).
        mask: optional boolean ``(B, *spatial)``: the elements to average over (segmentation: the forgotten
            voxels); an empty mask gives 0.

    Returns:
        a scalar loss.
    """
    logits = logits.float()
    kept = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
    kept[withdrawn] = False
    per_element = torch.logsumexp(logits, dim=1) - torch.logsumexp(logits[:, kept], dim=1)
    if mask is None:
        return per_element.mean()
    weight = mask.to(per_element.dtype)
    return (per_element * weight).sum() / weight.sum().clamp_min(1)


def distillation_loss(logits: torch.Tensor, reference_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """KL divergence from the reference's tempered predictions to the model's, scaled by ``temperature**2``.

    Averaged per sample for classification and per voxel for segmentation.
    """
    log_p = F.log_softmax(logits.float() / temperature, dim=1)
    log_q = F.log_softmax(reference_logits.float() / temperature, dim=1)
    per_element = (log_q.exp() * (log_q - log_p)).sum(dim=1)
    return per_element.mean() * temperature**2


def remain_loss(
    logits: torch.Tensor,
    label_index: torch.Tensor,
    mode: str = "ce",
    reference_logits: torch.Tensor | None = None,
    temperature: float = 2.0,
) -> torch.Tensor:
    """The retention term on a remain batch.

    Args:
        logits: the revised model's logits on remain images.
        label_index: remain labels as class indices (used by ``"ce"``).
        mode: ``"ce"`` (cross-entropy on remain labels) or ``"distill"`` (toward the reference's predictions).
        reference_logits: the frozen reference's logits on the same images (needed by ``"distill"``).
        temperature: distillation temperature.

    Returns:
        a scalar loss.

    Raises:
        ValueError: for an unknown mode or ``"distill"`` without reference logits.
    """
    if mode == "ce":
        # mean over the labelled elements; elements labelled -100 (cross-entropy's ignore_index) are left out,
        # and a batch with none labelled gives 0 rather than NaN
        total = F.cross_entropy(logits.float(), label_index, reduction="sum", ignore_index=-100)
        return total / (label_index != -100).sum().clamp_min(1)
    if mode == "distill":
        if reference_logits is None:
            raise ValueError("the 'distill' remain loss needs the reference model's logits.")
        return distillation_loss(logits, reference_logits, temperature)
    raise ValueError(f"unknown remain loss {mode!r}; choose 'ce' or 'distill'.")
