"""Retrain from scratch and plain fine-tuning on the remain set: the gold standard and the simplest baseline."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from monai_unlearn.baselines.common import PrepareBatch, make_optimizer, reinitialize, train_epochs
from monai_unlearn.core.batch import default_prepare_batch

__all__ = ["retrain", "finetune"]


def retrain(
    model: torch.nn.Module,
    forget_loader: Iterable[Any] | None,
    remain_loader: Iterable[Any],
    epochs: int,
    lr: float,
    device: torch.device,
    prepare_batch: PrepareBatch = default_prepare_batch,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int | None = 0,
    model_fn: Callable[[], torch.nn.Module] | None = None,
) -> tuple[torch.nn.Module, int, list[dict[str, float]], dict[str, Any]]:
    """Retrain: train the same architecture from a fresh initialisation on the remain set only.

    Source: the exact-unlearning reference every unlearning paper compares with (e.g. Bourtoule et al., "Machine
    Unlearning", IEEE S&P 2021; the "retrain" row of Chen et al., CVPR 2023). The forget set is never read.

    Args:
        model: the network whose architecture is reused; every submodule with ``reset_parameters`` is reset
            (seeded), unless ``model_fn`` builds the fresh network instead.
        forget_loader: unused (kept for the common interface).
        remain_loader: the training data without the forget set.
        epochs: training passes (use the original training's schedule for a fair reference).
        lr: learning rate.
        device: where to train.
        prepare_batch: batch to ``(image, label)``.
        optimizer: ``"sgd"`` or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: weight decay.
        seed: seed of the re-initialisation.
        model_fn: optional factory of a fresh, untrained network.

    Returns:
        ``(model, iterations, history, parameters)``.
    """
    if model_fn is not None:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            model = model_fn().to(device)
    else:
        reinitialize([model], seed=seed)
    opt = make_optimizer(model.parameters(), lr, optimizer, momentum, weight_decay)
    iterations, history = train_epochs(model, remain_loader, opt, epochs, device, prepare_batch)
    params = {"optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay, "seed": seed}
    return model, iterations, history, params


def finetune(
    model: torch.nn.Module,
    forget_loader: Iterable[Any] | None,
    remain_loader: Iterable[Any],
    epochs: int,
    lr: float,
    device: torch.device,
    prepare_batch: PrepareBatch = default_prepare_batch,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> tuple[torch.nn.Module, int, list[dict[str, float]], dict[str, Any]]:
    """Fine-tune: keep training the original model on the remain set, relying on catastrophic forgetting.

    Source: the "Fine-tune" baseline of Golatkar et al., "Eternal Sunshine of the Spotless Net", CVPR 2020, and
    of Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023. The forget set is never read.

    Args:
        model: the trained network (revised in place).
        forget_loader: unused (kept for the common interface).
        remain_loader: the remain data.
        epochs: passes over the remain set.
        lr: learning rate.
        device: where to train.
        prepare_batch: batch to ``(image, label)``.
        optimizer: ``"sgd"`` or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: weight decay.

    Returns:
        ``(model, iterations, history, parameters)``.
    """
    opt = make_optimizer(model.parameters(), lr, optimizer, momentum, weight_decay)
    iterations, history = train_epochs(model, remain_loader, opt, epochs, device, prepare_batch)
    return model, iterations, history, {"optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay}
