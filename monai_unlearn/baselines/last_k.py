"""CF-k and EU-k (Goel et al., 2022): revise only the last k blocks of the network on the remain set."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from monai_unlearn.baselines.common import (
    PrepareBatch,
    freeze_except,
    last_k_blocks,
    make_optimizer,
    reinitialize,
    train_epochs,
)
from monai_unlearn.core.batch import default_prepare_batch

__all__ = ["cf_k", "eu_k"]


def _train_last_k(
    model: torch.nn.Module,
    remain_loader: Iterable[Any],
    epochs: int,
    lr: float,
    device: torch.device,
    prepare_batch: PrepareBatch,
    k: int,
    block_names: Iterable[str] | None,
    reinit: bool,
    seed: int | None,
    optimizer: str,
    momentum: float,
    weight_decay: float,
) -> tuple[torch.nn.Module, int, list[dict[str, float]], dict[str, Any]]:
    blocks = last_k_blocks(model, k, block_names)
    names = [name for name, _ in blocks]
    reset = reinitialize([m for _, m in blocks], seed=seed) if reinit else 0
    requires = {n: p.requires_grad for n, p in model.named_parameters()}
    frozen = freeze_except(model, [m for _, m in blocks])
    try:
        opt = make_optimizer(model.parameters(), lr, optimizer, momentum, weight_decay)
        iterations, history = train_epochs(model, remain_loader, opt, epochs, device, prepare_batch, frozen=frozen)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(requires[n])
    params = {
        "k": k,
        "blocks": names,
        "reinitialized_modules": reset,
        "optimizer": optimizer,
        "momentum": momentum,
        "weight_decay": weight_decay,
    }
    if reinit:
        params["seed"] = seed
    return model, iterations, history, params


def cf_k(
    model: torch.nn.Module,
    forget_loader: Iterable[Any] | None,
    remain_loader: Iterable[Any],
    epochs: int,
    lr: float,
    device: torch.device,
    prepare_batch: PrepareBatch = default_prepare_batch,
    k: int = 2,
    block_names: Iterable[str] | None = None,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> tuple[torch.nn.Module, int, list[dict[str, float]], dict[str, Any]]:
    """CF-k ("catastrophically forgetting the last k layers"): fine-tune only the last ``k`` blocks on remain.

    Source: Goel, Prabhu, Sanyal, Lim, Torr and Kumaraguru, "Towards Adversarial Evaluation of Machine
    Unlearning" (arXiv 2201.06640, 2022; also titled "Evaluating Inexact Unlearning Requires Revisiting
    Forgetting"). All other blocks are frozen: no gradients, and eval mode so their batch-norm statistics do
    not move either; they leave bit-identical.

    Args:
        model: the trained network (revised in place).
        forget_loader: unused (kept for the common interface).
        remain_loader: the remain data.
        epochs: passes over the remain set.
        lr: learning rate.
        device: where to train.
        prepare_batch: batch to ``(image, label)``.
        k: how many blocks, counted from the output, to train (see ``model_blocks``).
        block_names: optional explicit block list in forward order (dotted submodule names).
        optimizer: ``"sgd"`` or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: weight decay.

    Returns:
        ``(model, iterations, history, parameters)``; ``parameters["blocks"]`` names the trained blocks.
    """
    return _train_last_k(
        model, remain_loader, epochs, lr, device, prepare_batch, k, block_names, False, None, optimizer, momentum,
        weight_decay,
    )


def eu_k(
    model: torch.nn.Module,
    forget_loader: Iterable[Any] | None,
    remain_loader: Iterable[Any],
    epochs: int,
    lr: float,
    device: torch.device,
    prepare_batch: PrepareBatch = default_prepare_batch,
    k: int = 2,
    block_names: Iterable[str] | None = None,
    seed: int | None = 0,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> tuple[torch.nn.Module, int, list[dict[str, float]], dict[str, Any]]:
    """EU-k ("exact unlearning of the last k layers"): re-initialise the last ``k`` blocks, then train them on remain.

    Source: Goel et al., "Towards Adversarial Evaluation of Machine Unlearning" (arXiv 2201.06640, 2022). The
    published code calls an initialisation routine that leaves the weights as they were; here every submodule
    of the chosen blocks with ``reset_parameters`` really is re-initialised (seeded; batch-norm running
    statistics reset too) before training, so the forget set's influence on those blocks is gone. The other
    blocks are frozen (no gradients, eval mode).

    Args:
        model: the trained network (revised in place).
        forget_loader: unused (kept for the common interface).
        remain_loader: the remain data.
        epochs: passes over the remain set.
        lr: learning rate.
        device: where to train.
        prepare_batch: batch to ``(image, label)``.
        k: how many blocks, counted from the output, to re-initialise and train.
        block_names: optional explicit block list in forward order.
        seed: seed of the re-initialisation.
        optimizer: ``"sgd"`` or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: weight decay.

    Returns:
        ``(model, iterations, history, parameters)``.
    """
    return _train_last_k(
        model, remain_loader, epochs, lr, device, prepare_batch, k, block_names, True, seed, optimizer, momentum,
        weight_decay,
    )
