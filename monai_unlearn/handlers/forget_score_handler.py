"""The forget-set score after each pass, for stopping rules (``ForgetTargetStopper``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["ForgetScoreHandler"]


class ForgetScoreHandler:
    """Scores the network on the forget data after every ``interval`` epochs and puts it in the engine's metrics.

    ``score_fn(network)`` returns the score (forget accuracy, or the forgotten classes' Dice); it is written to
    ``engine.state.metrics[metric_name]`` and to the epoch's record in ``engine.state.pass_history`` when an
    ``UnlearningHistoryHandler`` keeps one. Attach it after the history handler and before the stopper that
    reads the metric (ignite runs an event's handlers in attach order).

    Args:
        score_fn: ``callable(network) -> float``, evaluated without gradients.
        network: the network to score; ``None`` uses ``engine.network``.
        metric_name: the key in ``engine.state.metrics``.
        interval: score every ``interval`` epochs.
        name: logger name; ``None`` uses the engine's logger.

    Raises:
        ValueError: when ``interval < 1``.
    """

    def __init__(
        self,
        score_fn: Callable[[torch.nn.Module], float],
        network: torch.nn.Module | None = None,
        metric_name: str = "forget_accuracy",
        interval: int = 1,
        name: str | None = None,
    ) -> None:
        if int(interval) != interval or interval < 1:
            raise ValueError(f"interval must be a positive integer, got {interval}.")
        self.score_fn = score_fn
        self.network = network
        self.metric_name = metric_name
        self.interval = int(interval)
        self.logger = logging.getLogger(name) if name is not None else None

    def attach(self, engine: Engine) -> None:
        """Score at the end of every ``interval`` epochs; attaching twice to one engine is a no-op."""
        if self.logger is None:
            self.logger = engine.logger
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> Any:
        """Score now and record the value."""
        network = self.network if self.network is not None else engine.network
        value = float(self.score_fn(network))
        engine.state.metrics[self.metric_name] = value
        history = getattr(engine.state, "pass_history", None)
        if history and history[-1].get("epoch") == engine.state.epoch:
            history[-1][self.metric_name] = value
        logger = self.logger if self.logger is not None else engine.logger
        logger.info(f"ForgetScoreHandler: {self.metric_name} {value:.4f} after epoch {engine.state.epoch}")
        return value
