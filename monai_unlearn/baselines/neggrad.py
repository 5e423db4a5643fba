"""NegGrad+ (Kurmanji et al., NeurIPS 2023): descend on the remain set while ascending on the forget set."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from monai_unlearn.baselines.common import PrepareBatch, make_optimizer, paired_batches
from monai_unlearn.core.batch import cycle, default_prepare_batch

__all__ = ["neggrad_plus"]


def neggrad_plus(
    model: torch.nn.Module,
    forget_loader: Iterable[Any],
    remain_loader: Iterable[Any],
    epochs: int,
    lr: float,
    device: torch.device,
    prepare_batch: PrepareBatch = default_prepare_batch,
    beta: float = 0.99,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> tuple[torch.nn.Module, int, list[dict[str, float]], dict[str, Any]]:
    """NegGrad+: minimise ``beta * CE(remain) - (1 - beta) * CE(forget)`` jointly.

    Source: Kurmanji, Triantafillou, Hayes and Triantafillou, "Towards Unbounded Machine Unlearning", NeurIPS 2023
    (the "NegGrad+" baseline, an improved NegGrad of Golatkar et al. 2020 that adds the remain term). Each
    remain batch is paired with the next forget batch (the forget loader is cycled); one epoch is one pass
    over the remain set.

    Args:
        model: the trained network (revised in place).
        forget_loader: the data to forget (gradient ascent).
        remain_loader: the data to keep (gradient descent).
        epochs: passes over the remain set.
        lr: learning rate.
        device: where to train.
        prepare_batch: batch to ``(image, label)``.
        beta: weight of the remain term in ``[0, 1]``; the forget term gets ``1 - beta``.
        optimizer: ``"sgd"`` or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: weight decay.

    Returns:
        ``(model, iterations, history, parameters)``.

    Raises:
        ValueError: for ``beta`` outside ``[0, 1]``.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}.")
    opt = make_optimizer(model.parameters(), lr, optimizer, momentum, weight_decay)
    forget_iter = cycle(forget_loader)
    iterations = 0
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        model.train()
        sums = torch.zeros(2, device=device)
        count = 0
        for xr, yr, xf, yf in paired_batches(remain_loader, forget_iter, device, prepare_batch):
            logits = model(torch.cat([xr, xf]))
            loss_r = F.cross_entropy(logits[: xr.shape[0]], yr)
            loss_f = F.cross_entropy(logits[xr.shape[0] :], yf)
            loss = beta * loss_r - (1.0 - beta) * loss_f
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([loss_r.detach(), loss_f.detach()])
            count += 1
            iterations += 1
        if count == 0:
            raise ValueError("the remain loader yielded no batches.")
        remain_mean, forget_mean = (float(v) / count for v in sums)
        history.append({"epoch": epoch + 1, "remain_loss": remain_mean, "forget_loss": forget_mean})
    model.eval()
    params = {"beta": beta, "optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay}
    return model, iterations, history, params
