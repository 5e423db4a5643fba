"""Does what is kept carry over to the forget items? A retrain-free check for a retired source whose labels survive.

The partial target (``calibration_target``) assumes that a model trained without the forget items recognises them
as well as held-out items of their labels. That holds for a random subset, or for a scanner whose images look like
those of the scanners that stay; it fails for a source unlike every kept one (a retrained model may then recognise
few of its items). The original model cannot tell the two apart: it was trained on the forget items.

The check here uses networks that never saw any data: copies of the model's architecture with fresh random weights.
Their convolution features, pooled, feed a linear probe trained on kept items only. If the probe recognises the
forget items clearly worse than held-out items of the same labels, the kept data does not carry over to them, and
the ratio of the two accuracies scales the target. Random features are a weak classifier, but a fair one: they
favour neither the kept nor the forgotten items.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from monai_unlearn.core.batch import default_prepare_batch, label_index_for_image

__all__ = ["source_transfer", "random_feature_probe"]

_CONV = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def _reinitialised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of ``model`` with fresh random weights (``reset_parameters``) and empty normalisation statistics."""
    with torch.random.fork_rng():  # the caller's CPU and CUDA random states are restored afterwards
        torch.manual_seed(seed)
        net = copy.deepcopy(model)
        for module in net.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    return net.eval()


@torch.no_grad()
def _features(net: torch.nn.Module, images: list[torch.Tensor]) -> torch.Tensor:
    """Every convolution's output averaged over space, concatenated (the inputs of Linear layers for a network
    without convolutions)."""
    layers = [m for m in net.modules() if isinstance(m, _CONV)]
    hook_input = not layers
    if hook_input:
        layers = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    if not layers:
        raise ValueError("the network has no convolution or linear layer to take random features from.")
    found: list[torch.Tensor] = []

    def keep(_module, inputs, output):
        value = inputs[0] if hook_input else output
        found.append(value.flatten(2).mean(2) if value.ndim > 2 else value.flatten(1))

    hooks = [layer.register_forward_hook(keep) for layer in layers]
    rows = []
    try:
        for image in images:
            found.clear()
            net(image)
            rows.append(torch.cat([f.float().cpu() for f in found], 1))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(rows)


def _collect(
    loader: Iterable[Any], device, prepare_batch: Callable, max_items: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The first ``max_items`` images (as batches) and class labels a loader yields."""
    images, labels, count = [], [], 0
    for batch in loader:
        image, label = prepare_batch(batch, device, False)
        index = label_index_for_image(label, image).reshape(-1)
        take = min(len(index), max_items - count)
        images.append(image[:take])
        labels.append(index[:take].cpu())
        count += take
        if count >= max_items:
            break
    return images, (torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long))


def random_feature_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, steps: int = 200, weight_decay: float = 1e-3
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A softmax regression on standardised features; returns ``predict(features) -> labels``."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = (train_x - mean) / std
    weight = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ weight + bias, train_y) + weight_decay * weight.pow(2).sum()
            loss.backward()
            optimizer.step()
    weight, bias = weight.detach(), bias.detach()
    return lambda z: (((z - mean) / std) @ weight + bias).argmax(1)


def source_transfer(
    model: torch.nn.Module,
    forget_loader: Iterable[Any],
    remain_loader: Iterable[Any],
    held_out_loader: Iterable[Any],
    labels: Sequence[int],
    device: torch.device | str | None = None,
    prepare_batch: Callable = default_prepare_batch,
    nets: int = 2,
    max_items: int = 256,
    z_threshold: float = 3.0,
    seed: int = 0,
) -> dict[str, Any]:
    """How well what is kept carries over to the forget items, from random-feature probes trained on kept items.

    Args:
        model: the original model (only its architecture is used; its weights are not read).
        forget_loader, remain_loader: the run's forget and kept data.
        held_out_loader: held-out data (items of the forget items' labels are compared with the forget items).
        labels: the shared labels to compare on (kept items still have them).
        device: where to compute the features.
        prepare_batch: batch to ``(image, label)``.
        nets: random networks averaged over.
        max_items: at most this many items are read from each loader (the cost stays small).
        z_threshold: the one-sided two-proportion z score above which the forget items are judged unlike the kept
            data (3: about one chance in a thousand for items alike).
        seed: seed of the random networks (the caller's random state is left as it was).

    Returns:
        ``{"ratio", "z", "applies", "probe_forget", "probe_held_out", "forget_items", "held_out_items"}``;
        ``applies`` says whether the ratio should scale the target. ``ratio`` is 1.0 when it does not apply.
    """
    wanted = {int(x) for x in labels}
    device = device if device is not None else next(model.parameters()).device
    forget_img, forget_y = _collect(forget_loader, device, prepare_batch, max_items)
    remain_img, remain_y = _collect(remain_loader, device, prepare_batch, max_items)
    held_img, held_y = _collect(held_out_loader, device, prepare_batch, max_items)
    result: dict[str, Any] = {"ratio": 1.0, "z": 0.0, "applies": False, "probe_forget": None, "probe_held_out": None,
                              "forget_items": 0, "held_out_items": 0}
    forget_mask = torch.isin(forget_y, torch.tensor(sorted(wanted)))
    held_mask = torch.isin(held_y, torch.tensor(sorted(wanted)))
    n_forget, n_held = int(forget_mask.sum()), int(held_mask.sum())
    result.update(forget_items=n_forget, held_out_items=n_held)
    if n_forget == 0 or n_held == 0 or len(remain_y) == 0:
        return result
    num_classes = int(max(remain_y.max(), forget_y.max(), held_y.max())) + 1
    forget_hits, held_hits = [], []
    for k in range(nets):
        net = _reinitialised(model, seed + k)
        train_x = _features(net, remain_img)
        predict = random_feature_probe(train_x, remain_y, num_classes)
        forget_hits.append((predict(_features(net, forget_img)) == forget_y)[forget_mask].float().mean().item())
        held_hits.append((predict(_features(net, held_img)) == held_y)[held_mask].float().mean().item())
    p_forget, p_held = sum(forget_hits) / nets, sum(held_hits) / nets
    pooled = (p_forget * n_forget + p_held * n_held) / (n_forget + n_held)
    spread = math.sqrt(max(pooled * (1 - pooled), 1e-9) * (1 / n_forget + 1 / n_held))
    z = (p_held - p_forget) / spread
    applies = z >= z_threshold and p_held > 0
    result.update(probe_forget=p_forget, probe_held_out=p_held, z=float(z), applies=bool(applies),
                  ratio=float(min(1.0, p_forget / p_held)) if applies else 1.0)
    return result
