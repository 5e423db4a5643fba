"""Compose the trained network with another unlearning run's model when the run completes."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_unlearn.core.composition import compose_state_dicts, finetune_on_remain, head_prefixes_for

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["ModelCompositionHandler"]


class ModelCompositionHandler:
    """At ``Events.COMPLETED``, replace part of ``engine.network`` with the same part of another model.

    With ``take="head"`` the network keeps its own feature extractor and takes the other model's classification
    head (e.g. this run kept the remain set best, the other forgot best); with ``take="features"`` it keeps its
    head and takes the other's feature extractor. Optionally the composed network is refitted on remain data
    (head only by default). The network is changed in place, so handlers attached after this one (checkpoint
    savers, reports) see the composed model.

    Args:
        other: the other run's model, or a path to its weights (a state dict saved with ``torch.save``, loaded with
            ``weights_only=True`` into a copy of ``engine.network``), or a bundle folder (its ``models/model.pt``).
        take: ``"head"`` or ``"features"``: which part comes from ``other``.
        head_prefixes: parameter-name prefixes of the head (detected for MONAI networks when ``None``).
        remain_data_loader: remain batches for the optional refit.
        refit_epochs: passes of the refit (0: no refit).
        refit_lr: learning rate of the refit.
        refit_head_only: refit only the head (the feature extractor stays exactly as composed).
        name: logger name (``None``: the engine's logger).

    Raises:
        ValueError: for an unknown ``take`` or a refit without remain data.
    """

    def __init__(
        self,
        other: torch.nn.Module | str,
        take: str = "head",
        head_prefixes: Sequence[str] | None = None,
        remain_data_loader: Iterable[Any] | None = None,
        refit_epochs: int = 0,
        refit_lr: float = 1e-3,
        refit_head_only: bool = True,
        name: str | None = None,
    ) -> None:
        if take not in ("head", "features"):
            raise ValueError(f"take must be 'head' or 'features', got {take!r}.")
        if refit_epochs > 0 and remain_data_loader is None:
            raise ValueError("a refit (refit_epochs > 0) needs remain_data_loader.")
        self.other = other
        self.take = take
        self.head_prefixes = tuple(head_prefixes) if head_prefixes else None
        self.remain_data_loader = remain_data_loader
        self.refit_epochs = refit_epochs
        self.refit_lr = refit_lr
        self.refit_head_only = refit_head_only
        self.logger = logging.getLogger(name) if name is not None else None

    def attach(self, engine: Engine) -> None:
        """Run ``self(engine)`` when the engine completes."""
        if self.logger is None:
            self.logger = engine.logger
        if not engine.has_event_handler(self, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self)

    def _other_state(self, network: torch.nn.Module) -> dict[str, torch.Tensor]:
        if isinstance(self.other, torch.nn.Module):
            return self.other.state_dict()
        path = os.path.join(self.other, "models", "model.pt") if os.path.isdir(self.other) else self.other
        other = copy.deepcopy(network)
        other.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return other.state_dict()

    def __call__(self, engine: Engine) -> None:
        """Compose ``engine.network`` with the other model (and refit it) in place."""
        network = engine.network
        prefixes = self.head_prefixes or head_prefixes_for(network)
        own, other = network.state_dict(), self._other_state(network)
        features, head = (own, other) if self.take == "head" else (other, own)
        network.load_state_dict(compose_state_dicts(features, head, prefixes))
        if self.refit_epochs > 0:
            finetune_on_remain(network, self.remain_data_loader, self.refit_epochs, self.refit_lr,
                               self.refit_head_only, prefixes, prepare_batch=_prepare(engine))
        self.logger.info(f"composed the network: {self.take} ({', '.join(prefixes)}) taken from the other model")


def _prepare(engine: Engine):
    def prepare(batch: Any, device: Any, non_blocking: bool) -> tuple[torch.Tensor, torch.Tensor]:
        prepared = engine.prepare_batch(batch, device, non_blocking)
        return prepared[0], prepared[1]

    return prepare
