"""The inner level of PSG: a noisy sign-gradient search for the nearest point across the decision boundary."""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from monai_unlearn.core.config import PSGConfig
from monai_unlearn.core.noise import sample_noise
from monai_unlearn.core.schedules import step_size_at

__all__ = ["BoundarySearchResult", "PSGBoundarySearch", "frozen_reference", "per_sample_view"]


def frozen_reference(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``model`` to search on: eval mode, no weight gradients, same device.

    Args:
        model: the trained model before unlearning.

    Returns:
        a deep copy in eval mode whose parameters do not require gradients.
    """
    reference = copy.deepcopy(model)
    reference.eval()
    reference.requires_grad_(False)
    return reference


def per_sample_view(mask: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a per-sample ``(B,)`` tensor so it broadcasts over a tensor of ``ndim`` dimensions."""
    return mask.reshape(mask.shape[0], *([1] * (ndim - 1)))


@dataclass
class BoundarySearchResult:
    """What the search found for one batch.

    Attributes:
        boundary_input: the searched inputs x_T, detached.
        boundary_logits: the reference's logits at x_T, detached (float32).
        label_index: the true labels as class indices, ``(B,)`` or ``(B, *spatial)``.
    """

    boundary_input: torch.Tensor
    boundary_logits: torch.Tensor
    label_index: torch.Tensor


class PSGBoundarySearch:
    """Perturbed sign-gradient boundary search on a frozen reference model.

    Each step ascends the reference's cross-entropy on the true label, pulled back toward the start by
    ``lam`` and perturbed by ``gamma``-scaled noise inside the sign, then projects onto the ``eps`` ball and
    the valid value range. With ``normalize_gradient`` (the default) each sample's gradient is first divided by
    its mean absolute value, so ``lam`` and ``gamma`` weigh against a gradient of unit scale. The gradient is that of the *sum* of per-sample (per-voxel) losses, so one sample's
    direction does not depend on the batch size; the reference's weights receive no gradients.

    Works for classification logits ``(B, C)`` and segmentation logits ``(B, C, *spatial)``. For
    segmentation, ``mask`` restricts the loss (and so the search) to the voxels being forgotten.

    Args:
        reference: the frozen original model (see ``frozen_reference``).
        config: the PSG parameters.
        amp: run the reference's forward passes under ``torch.autocast`` on CUDA.
    """

    def __init__(self, reference: torch.nn.Module, config: PSGConfig, amp: bool = False) -> None:
        self.reference = reference
        self.config = config
        self.amp = amp
        self._generator: torch.Generator | None = None
        self._generator_device: torch.device | None = None

    def _noise_generator(self, device: torch.device) -> torch.Generator | None:
        if self.config.seed is None:
            return None
        if self._generator is None or self._generator_device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.config.seed)
            self._generator_device = device
        return self._generator

    def generator_state(self) -> torch.Tensor | None:
        """The noise generator's state, for checkpoints (``None`` when unseeded or unused)."""
        return None if self._generator is None else self._generator.get_state()

    def restore_generator_state(self, state: torch.Tensor | None, device: torch.device | str) -> None:
        """Continue the noise sequence from a ``generator_state()`` taken earlier (``None``: nothing to restore)."""
        generator = self._noise_generator(torch.device(device)) if state is not None else None
        if generator is not None:
            generator.set_state(state)

    def _autocast(self, device: torch.device):
        if self.amp and device.type == "cuda":
            return torch.autocast(device_type="cuda")
        return nullcontext()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast(x.device):
            return self.reference(x).float()

    def __call__(
        self, x: torch.Tensor, label_index: torch.Tensor, lam: float | None = None, mask: torch.Tensor | None = None
    ) -> BoundarySearchResult:
        """Search from ``x`` for points across the reference's decision boundary.

        Args:
            x: the forget inputs, ``(B, channels, *spatial)``, as the transforms produced them.
            label_index: their labels as class indices, ``(B,)`` or ``(B, *spatial)``.
            lam: the proximity weight for this iteration (the config's ``lam`` when ``None``).
            mask: optional boolean ``(B, *spatial)`` selecting the voxels whose loss drives the search.

        Returns:
            the boundary points, the reference's logits there, and the label indices.
        """
        cfg = self.config
        lam = cfg.lam if lam is None else lam
        x0 = x.detach()
        scale = (x0.amax() - x0.amin()) if cfg.eps_mode == "relative" else None
        eps = cfg.eps * scale if scale is not None else cfg.eps
        low, high = self._value_bounds(x0)
        generator = self._noise_generator(x0.device) if cfg.gamma > 0 else None
        weight = None if mask is None else mask.to(dtype=x0.dtype)

        xt = x0.clone()
        for t in range(1, cfg.num_steps + 1):
            xt.requires_grad_(True)
            logits = self._logits(xt)
            losses = F.cross_entropy(logits, label_index, reduction="none")
            if weight is not None:
                losses = losses * weight
            (grad,) = torch.autograd.grad(losses.sum(), xt)
            xt = xt.detach()
            direction = grad
            if cfg.normalize_gradient:
                scale_per_sample = grad.abs().flatten(1).mean(dim=1).clamp_min(torch.finfo(grad.dtype).tiny)
                direction = grad / per_sample_view(scale_per_sample, grad.ndim)
            if lam > 0:
                direction = direction - lam * (xt - x0)
            if cfg.gamma > 0:
                direction = direction + cfg.gamma * sample_noise(xt, cfg.noise, generator)
            eta = step_size_at(cfg.first_step_size, t, cfg.step_schedule)
            eta = eta * scale if scale is not None else eta
            proposal = xt + eta * direction.sign()
            proposal = torch.minimum(torch.maximum(proposal, x0 - eps), x0 + eps)
            if low is not None:
                proposal = torch.minimum(torch.maximum(proposal, low), high)
            if cfg.early_stop:
                still_true = logits.detach().argmax(dim=1) == label_index
                if mask is not None:
                    still_true = still_true & mask
                if still_true.ndim > 1:
                    still_true = still_true.flatten(1).any(dim=1)
                proposal = torch.where(per_sample_view(still_true, xt.ndim), proposal, xt)
            xt = proposal
        with torch.no_grad():
            boundary_logits = self._logits(xt)
        return BoundarySearchResult(boundary_input=xt, boundary_logits=boundary_logits, label_index=label_index)

    def _value_bounds(self, x0: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        value_range = self.config.value_range
        if value_range is None:
            return None, None
        if value_range == "batch":
            return x0.amin(), x0.amax()
        low, high = value_range
        return torch.tensor(low, dtype=x0.dtype, device=x0.device), torch.tensor(high, dtype=x0.dtype, device=x0.device)
