"""l1-sparse unlearning: fine-tune on the remain set with an l1 penalty that decays over the run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from monai_unlearn.baselines.common import PrepareBatch, make_optimizer
from monai_unlearn.core.batch import default_prepare_batch, label_index_for_image

__all__ = ["l1_sparse"]


def l1_sparse(
    model: torch.nn.Module,
    forget_loader: Iterable[Any] | None,
    remain_loader: Iterable[Any],
    epochs: int,
    lr: float,
    device: torch.device,
    prepare_batch: PrepareBatch = default_prepare_batch,
    alpha: float = 5e-4,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> tuple[torch.nn.Module, int, list[dict[str, float]], dict[str, Any]]:
    """Fine-tune on the remain set minimising ``CE + alpha_t * ||theta||_1``, with ``alpha_t`` decaying linearly.

    Source: Jia, Liu, Ram, Yao, Liu, Liu, Sharma and Liu, "Model Sparsity Can Simplify Machine Unlearning", NeurIPS
    2023: sparsity-aware unlearning, whose l1 weight goes linearly from ``alpha`` in the first pass to 0 in the last
    (``alpha_t = alpha * (1 - t / epochs)`` for pass ``t = 0 .. epochs-1``). The forget set is never read.

    Args:
        model: the trained network (revised in place).
        forget_loader: unused (kept for the common interface).
        remain_loader: the data to keep.
        epochs: passes over the remain set.
        lr: learning rate.
        device: where to train.
        prepare_batch: batch to ``(image, label)``.
        alpha: the l1 weight of the first pass.
        optimizer, momentum, weight_decay: the optimizer.

    Returns:
        ``(model, iterations, history, parameters)``; the history records each pass's ``alpha``.

    Raises:
        ValueError: for a negative ``alpha``.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}.")
    opt = make_optimizer(model.parameters(), lr, optimizer, momentum, weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    iterations = 0
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        model.train()
        alpha_t = alpha * (1.0 - epoch / epochs)
        total = torch.zeros((), device=device)
        count = 0
        for batch in remain_loader:
            image, label = prepare_batch(batch, device, False)
            loss = F.cross_entropy(model(image), label_index_for_image(label, image))
            if alpha_t:
                loss = loss + alpha_t * sum(p.abs().sum() for p in params)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
            count += 1
            iterations += 1
        if count == 0:
            raise ValueError("the remain loader yielded no batches.")
        history.append({"epoch": epoch + 1, "loss": float(total) / count, "alpha": alpha_t})
    model.eval()
    return model, iterations, history, {"alpha": alpha, "optimizer": optimizer, "momentum": momentum,
                                        "weight_decay": weight_decay}
