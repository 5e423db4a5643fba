"""SCRUB (Kurmanji et al., NeurIPS 2023): a student moves away from a frozen teacher on forget, stays close on remain."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from monai_unlearn.baselines.common import PrepareBatch, frozen_teacher, make_optimizer
from monai_unlearn.core.batch import default_prepare_batch, label_index_for_image

__all__ = ["scrub", "teacher_student_kl"]


def teacher_student_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(t / T) || softmax(s / T))``, batch mean: SCRUB's ``DistillKL``."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_student, teacher, reduction="batchmean") * temperature**2


def scrub(
    model: torch.nn.Module,
    forget_loader: Iterable[Any],
    remain_loader: Iterable[Any],
    epochs: int,
    lr: float,
    device: torch.device,
    prepare_batch: PrepareBatch = default_prepare_batch,
    msteps: int | None = None,
    alpha: float = 0.001,
    gamma: float = 0.99,
    temperature: float = 4.0,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    teacher: torch.nn.Module | None = None,
) -> tuple[torch.nn.Module, int, list[dict[str, float]], dict[str, Any]]:
    """SCRUB: alternate max-steps on the forget set and min-steps on the remain set against a frozen teacher.

    Source: Kurmanji, Triantafillou, Hayes and Triantafillou, "Towards Unbounded Machine Unlearning", NeurIPS 2023
    (Algorithm 1). The teacher is the original model, a *separate frozen copy* (eval mode, no gradients; its
    weights never change), and ``model`` is the student. In each of the first ``msteps`` epochs a max-step pass
    over the forget set maximises ``d(x) = KL(p_teacher(x) || p_student(x))`` (temperature ``T``); every epoch
    then runs a min-step pass over the remain set minimising ``alpha * d(x_r) + gamma * CE(student(x_r), y_r)``.
    (The published code builds teacher and student from one object, so its "teacher" moves with the student.)

    Args:
        model: the trained network; becomes the student (revised in place).
        forget_loader: the data to forget.
        remain_loader: the data to keep.
        epochs: SCRUB epochs (min-step passes over the remain set).
        lr: learning rate.
        device: where to train.
        prepare_batch: batch to ``(image, label)``.
        msteps: how many of the first epochs also run a max-step pass; ``None`` means ``ceil(epochs / 2)``.
        alpha: weight of the distillation term in the min-steps.
        gamma: weight of the cross-entropy term in the min-steps.
        temperature: distillation temperature ``T``.
        optimizer: ``"sgd"`` or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: weight decay (5e-4 as in the published configuration).
        teacher: the frozen teacher; ``None`` takes a frozen copy of ``model`` before any update. A given
            teacher is used as is and must not be ``model`` itself.

    Returns:
        ``(model, iterations, history, parameters)``.

    Raises:
        ValueError: when ``teacher`` is the student object, or ``msteps`` is outside ``[0, epochs]``.
    """
    if teacher is model:
        raise ValueError("the SCRUB teacher must be a separate copy of the original model, not the student itself.")
    if teacher is None:
        teacher = frozen_teacher(model)
    teacher.eval()
    msteps = math.ceil(epochs / 2) if msteps is None else msteps
    if not 0 <= msteps <= epochs:
        raise ValueError(f"msteps must be between 0 and epochs={epochs}, got {msteps}.")
    opt = make_optimizer(model.parameters(), lr, optimizer, momentum, weight_decay)
    iterations = 0
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        model.train()
        record: dict[str, float] = {"epoch": epoch + 1}
        if epoch < msteps:
            total, count = torch.zeros((), device=device), 0
            for batch in forget_loader:
                x, _ = prepare_batch(batch, device, False)
                with torch.no_grad():
                    t_logits = teacher(x)
                loss = -teacher_student_kl(model(x), t_logits, temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach()
                count += 1
                iterations += 1
            record["max_step_kl"] = -float(total) / max(count, 1)
        total, count = torch.zeros((), device=device), 0
        for batch in remain_loader:
            x, y = prepare_batch(batch, device, False)
            with torch.no_grad():
                t_logits = teacher(x)
            s_logits = model(x)
            loss = alpha * teacher_student_kl(s_logits, t_logits, temperature) + gamma * F.cross_entropy(
                s_logits, label_index_for_image(y, x)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
            count += 1
            iterations += 1
        if count == 0:
            raise ValueError("the remain loader yielded no batches.")
        record["min_step_loss"] = float(total) / count
        history.append(record)
    model.eval()
    params = {
        "msteps": msteps,
        "alpha": alpha,
        "gamma": gamma,
        "temperature": temperature,
        "optimizer": optimizer,
        "momentum": momentum,
        "weight_decay": weight_decay,
    }
    return model, iterations, history, params
