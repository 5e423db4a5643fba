"""One PSG unlearning step: boundary search on the reference, then one update of the revised model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch

from monai_unlearn.core.batch import label_index_for_image
from monai_unlearn.core.boundary_search import PSGBoundarySearch, frozen_reference
from monai_unlearn.core.config import PSGConfig
from monai_unlearn.core.head import classification_head, find_head, gradients_only_into
from monai_unlearn.core.losses import forget_loss, remain_loss, withdrawn_loss
from monai_unlearn.core.schedules import lambda_at
from monai_unlearn.core.targets import boundary_targets, targets_differ

__all__ = ["PSGUnlearner", "check_labels"]

logger = logging.getLogger(__name__)


def check_labels(logits: torch.Tensor, label_index: torch.Tensor, what: str = "labels") -> None:
    """Raise ``ValueError`` when class labels fall outside the network's ``C`` output classes.

    This reads the labels on the host, so call it once on a first batch, not inside the loop.
    """
    num_classes = logits.shape[1]
    low, high = int(label_index.min()), int(label_index.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"{what} range from {low} to {high}, but the network predicts {num_classes} classes (0..{num_classes - 1})."
        )


class PSGUnlearner:
    """Performs PSG unlearning steps on ``model`` against a frozen copy of its original weights.

    Each ``step`` runs the boundary search on the reference for the forget batch, turns the boundary point into
    targets, and makes one optimizer step on ``forget_loss + phi * remain_loss``. With ``withdrawn_classes``, the
    forget term also has ``withdrawn_weight * withdrawn_loss`` (the withdrawn classes' probability on the forget
    items or voxels, driven toward 0), and with ``config.withdrawn_scope == "head"`` only the network's head is revised
    (``revises_head_only``). Everything stays on the model's device and no value is read back to the host,
    so the step suits GPU pipelines; the returned losses are detached tensors.

    Args:
        model: the network to revise, in place.
        optimizer: the optimizer over ``model``'s parameters.
        config: PSG parameters (``PSGConfig()`` when ``None``).
        reference: the frozen original model; a frozen deep copy of ``model`` is taken when ``None``.
        amp: mixed precision on CUDA (autocast plus a gradient scaler); ignored on CPU.
        total_iterations: the planned number of steps, used by the ``linear`` lambda schedule.
        withdrawn_classes: classes withdrawn from the model: no boundary target takes them (see
            ``boundary_targets``' ``excluded_classes``), and the config's ``withdrawn_weight`` term drives their
            probability on the forget items toward 0; with ``withdrawn_scope="head"`` only the head is revised.
            ``None`` reads the targets off the boundary point and revises the whole network, as the paper does.

    Example::

        unlearner = PSGUnlearner(model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9),
                                 PSGConfig(eps=0.1, gamma=0.5, lam=0.1, phi=1.0))
        for (xf, yf), (xr, yr) in zip(forget_loader, remain_loader):
            unlearner.step(xf, yf, xr, yr)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        config: PSGConfig | None = None,
        reference: torch.nn.Module | None = None,
        amp: bool = False,
        total_iterations: int | None = None,
        withdrawn_classes: Sequence[int] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.config = config if config is not None else PSGConfig()
        self.reference = reference if reference is not None else frozen_reference(model)
        self.amp = amp
        self.total_iterations = total_iterations
        self.iteration = 0
        self.search = PSGBoundarySearch(self.reference, self.config, amp=amp)
        self.scaler = torch.amp.GradScaler("cuda") if amp and torch.cuda.is_available() else None
        self.withdrawn_classes = sorted({int(c) for c in withdrawn_classes}) if withdrawn_classes else None
        self._excluded: torch.Tensor | None = None
        #: ``(name, module)`` of the classification head when only it is revised (see ``revises_head_only``)
        self.head: tuple[str, torch.nn.Module] | None = None
        #: set by ``revise_whole_network``: the head alone could not forget without losing retention
        self.head_given_up = False
        self._no_head = False  # no module smaller than the network gives its output

    def revises_head_only(self, image: torch.Tensor | None = None) -> bool:
        """Whether this step revises the network's head alone: whole classes withdrawn (a classifier's labels, or a
        segmenter's label classes) with ``withdrawn_scope="head"``, until ``revise_whole_network``. Finds the head
        the first time, on the batch ``image`` when given (``find_head``: the classification head if it gives the
        network's output, else the deepest module that does); a network without one is revised whole (said in the
        log)."""
        if not self.withdrawn_classes or self.config.withdrawn_scope != "head" or self.head_given_up or self._no_head:
            return False
        if self.head is None:
            self.head = classification_head(self.model) if image is None else find_head(self.model, image)
            if self.head is None:
                self._no_head = True
                logger.warning("withdrawn_scope='head': no module smaller than the network gives its output, so the "
                               "whole network is revised")
                return False
        return True

    def revise_whole_network(self) -> bool:
        """Give up revising the head alone: put the original head back (the reference's; nothing else has changed,
        so the model is the original again), forget the optimizer's state for it, and revise the whole network from
        the next step on. Returns whether the head was being revised alone (``False``: nothing to do)."""
        if self.head is None or self.head_given_up:
            return False
        name, head = self.head
        head.load_state_dict(self.reference.get_submodule(name).state_dict())  # the same path in the frozen copy
        for parameter in head.parameters():
            self.optimizer.state.pop(parameter, None)
        self.head_given_up = True
        return True

    def _excluded_classes(self, device: torch.device) -> torch.Tensor | None:
        """``withdrawn_classes`` as an index tensor on ``device`` (made once per device)."""
        if not self.withdrawn_classes:
            return None
        if self._excluded is None or self._excluded.device != device:
            self._excluded = torch.as_tensor(self.withdrawn_classes, dtype=torch.long, device=device)
        return self._excluded

    def _autocast(self, device: torch.device):
        if self.amp and device.type == "cuda":
            return torch.autocast(device_type="cuda")
        return nullcontext()

    def current_lambda(self) -> float:
        """The proximity weight the next step will use."""
        cfg = self.config
        total = self.total_iterations or (self.iteration + 1)
        return lambda_at(cfg.lam, self.iteration + 1, total, cfg.lambda_schedule, cfg.lambda_decay)

    def forget_targets(
        self, forget_image: torch.Tensor, forget_label: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the boundary search and return ``(targets, label_index)`` for a forget batch."""
        label_index = label_index_for_image(forget_label, forget_image)
        found = self.search(forget_image, label_index, lam=self.current_lambda(), mask=mask)
        cfg = self.config
        target = boundary_targets(found.boundary_logits, cfg.target, cfg.temperature, cfg.top_k, label_index, mask,
                                  self._excluded_classes(forget_image.device))
        return target, label_index

    def compute_losses(
        self,
        forget_image: torch.Tensor,
        forget_label: torch.Tensor,
        remain_image: torch.Tensor | None = None,
        remain_label: torch.Tensor | None = None,
        forget_mask: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Boundary search, targets and the outer objective for one iteration, without updating the model.

        Args:
            forget_image: forget inputs on the model's device.
            forget_label: their labels (indices, ``(B, 1)`` or one-hot).
            remain_image: optional remain inputs; used when ``phi > 0``.
            remain_label: their labels.
            forget_mask: optional boolean ``(B, *spatial)``: for segmentation, the voxels being forgotten.

        Returns:
            ``loss`` (attached to the graph, for ``update``), detached ``forget_loss``, ``remain_loss`` and
            ``flip_rate`` (the fraction of forget elements whose boundary target differs from the true label),
            the boundary ``target``, the true ``label_index``, the model's ``forget_logits`` and ``head_only``
            (whether the step revises the head alone; give it to ``update``).

        Raises:
            ValueError: when ``phi > 0`` but no remain batch was given.
        """
        cfg = self.config
        use_remain = cfg.phi > 0
        if use_remain and (remain_image is None or remain_label is None):
            raise ValueError("phi > 0 needs a remain batch (remain_image and remain_label); pass one or set phi=0.")
        target, label_index = self.forget_targets(forget_image, forget_label, forget_mask)

        head_only = self.revises_head_only(forget_image)
        # the layers before a head revised alone run as they did for the original: in eval mode, so that neither their
        # batch-norm statistics nor dropout change, and without gradients
        self.model.train(not head_only)
        device = forget_image.device
        with self._autocast(device), gradients_only_into(self.head[1]) if head_only else nullcontext():
            if use_remain and remain_image.shape[1:] == forget_image.shape[1:]:
                logits = self.model(torch.cat([forget_image, remain_image]))
                forget_logits, remain_logits = logits[: forget_image.shape[0]], logits[forget_image.shape[0] :]
            else:
                forget_logits = self.model(forget_image)
                remain_logits = self.model(remain_image) if use_remain else None
        loss_forget = forget_loss(forget_logits, target)
        excluded = self._excluded_classes(device)
        if excluded is not None and cfg.withdrawn_weight > 0:
            # a withdrawn class: its probability on the forget items goes toward 0, as in a model never trained on it
            loss_forget = loss_forget + cfg.withdrawn_weight * withdrawn_loss(forget_logits, excluded, forget_mask)
        loss = loss_forget
        loss_remain = torch.zeros((), device=device)
        if use_remain:
            remain_index = label_index_for_image(remain_label, remain_image)
            reference_logits = None
            if cfg.remain_loss == "distill":
                with torch.no_grad(), self._autocast(device):
                    reference_logits = self.reference(remain_image).float()
            loss_remain = remain_loss(remain_logits, remain_index, cfg.remain_loss, reference_logits, cfg.distill_temperature)
            phi = cfg.head_phi if head_only and cfg.head_phi is not None else cfg.phi
            loss = loss + phi * loss_remain
        differ = targets_differ(target, label_index)
        if forget_mask is not None:
            flip_rate = (differ & forget_mask).sum() / forget_mask.sum().clamp_min(1)
        else:
            flip_rate = differ.float().mean()
        return {
            "loss": loss,
            "forget_loss": loss_forget.detach(),
            "remain_loss": loss_remain.detach(),
            "flip_rate": flip_rate.detach(),
            "target": target,
            "label_index": label_index,
            "forget_logits": forget_logits,
            "head_only": head_only,
        }

    def update(self, loss: torch.Tensor, head_only: bool = False) -> None:
        """Back-propagate ``loss`` and take one optimizer step (through the gradient scaler under AMP); for a step of
        the head alone, at ``config.head_lr_scale`` times the optimizer's learning rate."""
        self.optimizer.zero_grad(set_to_none=True)
        scale = self.config.head_lr_scale if head_only else 1.0
        rates = [group["lr"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr"] * scale
        try:
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
        finally:
            for group, rate in zip(self.optimizer.param_groups, rates):
                group["lr"] = rate
        self.iteration += 1

    def step(
        self,
        forget_image: torch.Tensor,
        forget_label: torch.Tensor,
        remain_image: torch.Tensor | None = None,
        remain_label: torch.Tensor | None = None,
        forget_mask: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """One unlearning iteration: ``compute_losses`` then ``update``; arguments as ``compute_losses``.

        Returns:
            the ``compute_losses`` record with ``loss`` detached.
        """
        out = self.compute_losses(forget_image, forget_label, remain_image, remain_label, forget_mask)
        self.update(out["loss"], out["head_only"])
        out["loss"] = out["loss"].detach()
        out["forget_logits"] = out["forget_logits"].detach()
        return out
