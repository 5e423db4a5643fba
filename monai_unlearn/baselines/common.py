"""Shared pieces of the baseline unlearning methods: batches, optimizers, blocks, the per-method record."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from monai_unlearn.core.batch import default_prepare_batch, label_index_for_image

__all__ = [
    "PrepareBatch",
    "make_optimizer",
    "model_blocks",
    "last_k_blocks",
    "reinitialize",
    "freeze_except",
    "train_epochs",
    "frozen_teacher",
    "paired_batches",
]

PrepareBatch = Callable[..., "tuple[torch.Tensor, torch.Tensor]"]


def make_optimizer(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """SGD (with momentum) or Adam over the trainable ``params``.

    Raises:
        ValueError: for an unknown optimizer name or no trainable parameter.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameter to optimise.")
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}.")


def model_blocks(model: torch.nn.Module, block_names: Iterable[str] | None = None) -> list[tuple[str, torch.nn.Module]]:
    """The model's blocks in forward order: its top-level children that hold parameters, or the named submodules.

    For ``nn.Sequential`` networks and networks whose children are registered in forward order (MONAI's
    classifiers, the benchmarks' AllCNN) the children are the blocks. Pass ``block_names`` (dotted submodule
    names, in forward order) for any other layout, e.g. ``["features.denseblock4", "class_layers"]``.

    Raises:
        ValueError: when a named block does not exist or the model has no block with parameters.
    """
    if block_names is not None:
        modules = dict(model.named_modules())
        missing = [n for n in block_names if n not in modules]
        if missing:
            raise ValueError(f"block(s) {missing} not found in the model; its submodules include {list(modules)[:20]}.")
        blocks = [(n, modules[n]) for n in block_names]
    else:
        blocks = [(n, m) for n, m in model.named_children() if any(True for _ in m.parameters())]
    if not blocks:
        raise ValueError("the model has no block with parameters.")
    return blocks


def last_k_blocks(
    model: torch.nn.Module, k: int, block_names: Iterable[str] | None = None
) -> list[tuple[str, torch.nn.Module]]:
    """The last ``k`` blocks of ``model_blocks(model, block_names)``.

    Raises:
        ValueError: when ``k`` is not between 1 and the number of blocks.
    """
    blocks = model_blocks(model, block_names)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(blocks):
        raise ValueError(f"k must be an integer between 1 and {len(blocks)} (the model's blocks), got {k!r}.")
    return blocks[-k:]


def reinitialize(modules: Iterable[torch.nn.Module], seed: int | None = 0) -> int:
    """Re-initialise every submodule of ``modules`` that has ``reset_parameters`` (weights and batch-norm stats).

    Args:
        modules: the blocks to reset.
        seed: seed of the new initialisation (``None``: the global generator).

    Returns:
        the number of submodules reset.

    Raises:
        ValueError: when nothing in ``modules`` can be re-initialised.
    """
    count = 0
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        for block in modules:
            for sub in block.modules():
                reset = getattr(sub, "reset_parameters", None)
                if callable(reset):
                    reset()
                    count += 1
                if isinstance(sub, torch.nn.modules.batchnorm._NormBase) and sub.track_running_stats:
                    sub.reset_running_stats()
    if count == 0:
        raise ValueError("none of the given blocks has a reset_parameters method: nothing was re-initialised.")
    return count


def freeze_except(model: torch.nn.Module, trainable: Iterable[torch.nn.Module]) -> list[torch.nn.Module]:
    """Make only ``trainable`` blocks require gradients; return the frozen top-level modules.

    Frozen parts are also put in eval mode by ``train_epochs`` (so their batch-norm statistics do not move and
    they stay bit-identical).
    """
    trainable = list(trainable)
    keep = {id(p) for block in trainable for p in block.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    keep_modules = {id(m) for block in trainable for m in block.modules()}
    return [m for m in model.modules() if id(m) not in keep_modules and not any(True for _ in m.children())]


def _set_mode(model: torch.nn.Module, frozen: list[torch.nn.Module]) -> None:
    model.train()
    for module in frozen:
        module.eval()


def train_epochs(
    model: torch.nn.Module,
    loader: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    device: torch.device,
    prepare_batch: PrepareBatch = default_prepare_batch,
    frozen: list[torch.nn.Module] | None = None,
) -> tuple[int, list[dict[str, float]]]:
    """Plain cross-entropy training for ``epochs`` passes over ``loader``.

    Returns:
        the number of optimizer steps and a per-epoch history of mean losses.

    Raises:
        ValueError: when the loader yields no batch, or the loss becomes non-finite.
    """
    frozen = frozen or []
    iterations = 0
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        _set_mode(model, frozen)
        total = torch.zeros((), device=device)
        count = 0
        for batch in loader:
            image, label = prepare_batch(batch, device, False)
            loss = torch.nn.functional.cross_entropy(model(image), label_index_for_image(label, image))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            count += 1
            iterations += 1
        if count == 0:
            raise ValueError("the training loader yielded no batches.")
        mean = float(total) / count
        if mean != mean or mean in (float("inf"), float("-inf")):
            raise FloatingPointError(f"training diverged in pass {epoch + 1} (loss {mean}); lower the learning rate.")
        history.append({"epoch": epoch + 1, "loss": mean})
    model.eval()
    return iterations, history


def frozen_teacher(model: torch.nn.Module) -> torch.nn.Module:
    """A separate, frozen copy of ``model`` (eval mode, no gradients): a teacher that cannot move."""
    teacher = copy.deepcopy(model)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def paired_batches(
    remain_loader: Iterable[Any], forget_iter: Iterator[Any], device: torch.device,
    prepare_batch: PrepareBatch = default_prepare_batch,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One pass over the remain loader, each remain batch with the next forget batch: ``(xr, yr, xf, yf)`` with the
    labels as class indices (``forget_iter`` is usually ``cycle(forget_loader)``, kept across passes)."""
    for batch in remain_loader:
        xr, yr = prepare_batch(batch, device, False)
        xf, yf = prepare_batch(next(forget_iter), device, False)
        yield xr, label_index_for_image(yr, xr), xf, label_index_for_image(yf, xf)
