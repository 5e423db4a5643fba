"""Batch-norm running statistics of a revised model, estimated again from the data it keeps.

An unlearning batch is half forget items, half remain items, so during unlearning every batch-norm layer folds the
forget items into its running mean and variance. A model evaluated (and deployed) with those statistics normalises
the kept data with figures drawn largely from the data it was asked to forget, unlike a model retrained without it,
whose statistics come from the kept data alone. Where the forget items differ from the kept ones (a retired scanner, a
withdrawn class) this alone can make a kept class unrecognisable in eval mode while the training loss looks fine.
``reestimate_running_stats`` recomputes the statistics from remain batches with the current weights, the way
``torch.optim.swa_utils.update_bn`` does after weight averaging. With the opt-in ``remain_norm_stats``, the calibrated
stop calls it at a check whose retention guard fell and checks that state again, so a state it then keeps and returns
is normalised like a model of the kept data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["DEFAULT_NORM_STATS_ITEMS", "has_running_stats", "reestimate_running_stats", "remain_images"]

#: remain items the statistics are estimated from at each check
DEFAULT_NORM_STATS_ITEMS = 512


def _tracking_norms(model: torch.nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def has_running_stats(model: torch.nn.Module) -> bool:
    """Whether ``model`` has batch-norm layers that keep running statistics (instance norm does not)."""
    return bool(_tracking_norms(model))


def remain_images(loader: Iterable[Any], prepare_batch: Callable, device: torch.device | str) -> Iterator[torch.Tensor]:
    """The images of ``loader``'s batches on ``device`` (through ``prepare_batch``)."""
    for batch in loader:
        yield prepare_batch(batch, device, False)[0]


@torch.no_grad()
def reestimate_running_stats(model: torch.nn.Module, images: Iterable[torch.Tensor],
                             max_items: int = DEFAULT_NORM_STATS_ITEMS) -> int:
    """Recompute the batch-norm running statistics of ``model`` from ``images`` (a cumulative average over batches,
    with the current weights), up to about ``max_items`` items; the other parameters and the train / eval mode are left
    as they were. Returns the number of items used (0 when the model has no such layers or ``images`` is empty, in which
    case the statistics are unchanged)."""
    norms = _tracking_norms(model)
    if not norms:
        return 0
    saved = {m: (m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms}
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    seen = 0
    try:
        for batch in images:
            try:
                model(batch)
            except ValueError:  # a batch of one item where a layer sees one value per channel
                continue
            seen += batch.shape[0]
            if seen >= max_items:
                break
    finally:
        model.train(was_training)
        for m, (momentum, mean, var, count) in saved.items():
            m.momentum = momentum
            if not seen:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
    return seen
