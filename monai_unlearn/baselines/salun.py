"""SalUn: random relabelling of the forget set, updating only the weights most salient to forgetting."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from monai_unlearn.baselines.common import PrepareBatch, make_optimizer, paired_batches
from monai_unlearn.core.batch import cycle, default_prepare_batch, label_index_for_image

__all__ = ["salun", "saliency_mask"]


def saliency_mask(
    model: torch.nn.Module, forget_loader: Iterable[Any], device: torch.device, keep: float = 0.5,
    prepare_batch: PrepareBatch = default_prepare_batch,
) -> dict[str, torch.Tensor]:
    """Boolean masks of the weights whose forgetting-loss gradient is largest in magnitude (one threshold for all).

    The forgetting loss is the cross-entropy on the forget set (its gradient ascent is what forgetting pushes); the
    ``keep`` fraction of all weight entries with the largest ``|gradient|`` are salient.

    Raises:
        ValueError: for ``keep`` outside ``(0, 1]`` or an empty forget loader.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}.")
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    grads = {name: torch.zeros_like(p) for name, p in params.items()}
    was_training = model.training
    model.eval()
    batches = 0
    for batch in forget_loader:
        image, label = prepare_batch(batch, device, False)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(image), label_index_for_image(label, image)).backward()
        for name, p in params.items():
            if p.grad is not None:
                grads[name] += p.grad.detach()
        batches += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if batches == 0:
        raise ValueError("the forget loader yielded no batches.")
    magnitudes = torch.cat([g.abs().flatten() for g in grads.values()])
    k = max(1, int(round(keep * magnitudes.numel())))
    threshold = torch.topk(magnitudes, k).values.min()
    return {name: g.abs() >= threshold for name, g in grads.items()}


def salun(
    model: torch.nn.Module,
    forget_loader: Iterable[Any],
    remain_loader: Iterable[Any],
    epochs: int,
    lr: float,
    device: torch.device,
    prepare_batch: PrepareBatch = default_prepare_batch,
    keep: float = 0.5,
    num_classes: int | None = None,
    seed: int = 0,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> tuple[torch.nn.Module, int, list[dict[str, float]], dict[str, Any]]:
    """SalUn with random labels: fine-tune on the forget set relabelled at random and on the remain set, changing
    only the salient weights.

    Source: Fan, Liu, Zhang, Wei, Wong and Liu, "SalUn: Empowering Machine Unlearning via Gradient-based Weight
    Saliency in Both Image Classification and Generation", ICLR 2024 (arXiv 2310.12508): the weight saliency mask
    (``saliency_mask``, the top ``keep`` fraction by the forgetting-loss gradient's magnitude) and random labelling.
    Each remain batch is paired with the next forget batch (cycled), whose labels are replaced by a random other
    class (seeded); one epoch is one pass over the remain set. Gradients outside the mask are zeroed before each
    step (and weight decay is applied only inside it), so unmasked weights never change.

    Args:
        model: the trained network (revised in place).
        forget_loader: the data to forget.
        remain_loader: the data to keep.
        epochs: passes over the remain set.
        lr: learning rate.
        device: where to train.
        prepare_batch: batch to ``(image, label)``.
        keep: fraction of the weights in the saliency mask.
        num_classes: classes to draw random labels from (``None``: the network's output size).
        seed: seed of the random labels.
        optimizer, momentum, weight_decay: the optimizer.

    Returns:
        ``(model, iterations, history, parameters)``; the parameters include the mask's share of the weights.
    """
    mask = saliency_mask(model, forget_loader, device, keep, prepare_batch)
    params = dict(model.named_parameters())
    opt = make_optimizer([params[n] for n in mask], lr, optimizer, momentum, 0.0)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    forget_iter = cycle(forget_loader)
    iterations = 0
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        model.train()
        sums = torch.zeros(2, device=device)
        count = 0
        for xr, yr, xf, yf in paired_batches(remain_loader, forget_iter, device, prepare_batch):
            logits = model(torch.cat([xr, xf]))
            classes = num_classes or logits.shape[1]
            shift = torch.randint(1, classes, yf.shape, generator=generator).to(yf.device)
            random_label = (yf + shift) % classes  # a random class other than the true one
            loss_r = F.cross_entropy(logits[: xr.shape[0]], yr)
            loss_f = F.cross_entropy(logits[xr.shape[0]:], random_label)
            opt.zero_grad(set_to_none=True)
            (loss_r + loss_f).backward()
            for name, m in mask.items():
                p = params[name]
                if p.grad is not None:
                    if weight_decay:
                        p.grad.add_(p.detach(), alpha=weight_decay)
                    p.grad.mul_(m)
            opt.step()
            sums += torch.stack([loss_r.detach(), loss_f.detach()])
            count += 1
            iterations += 1
        if count == 0:
            raise ValueError("the remain loader yielded no batches.")
        means = (sums / count).tolist()
        history.append({"epoch": epoch + 1, "remain_loss": means[0], "forget_loss": means[1]})
    model.eval()
    share = float(sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values()))
    return model, iterations, history, {"keep": keep, "mask_share": share, "seed": seed, "optimizer": optimizer,
                                        "momentum": momentum, "weight_decay": weight_decay}
