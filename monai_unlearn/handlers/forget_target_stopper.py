"""Stop unlearning once the forget metric reaches its target, or after a budget of passes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from monai.utils import IgniteInfo, is_scalar, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["ForgetTargetStopper"]

STOP_MODES = ("min", "max")


class ForgetTargetStopper:
    """Terminates the engine when ``engine.state.metrics[metric_name]`` reaches ``target``, or after a budget.

    Checked on ``Events.EPOCH_COMPLETED``. With ``mode="min"`` the run stops once the metric is ``<= target``
    (e.g. forget accuracy down to the level of a retrained model); with ``mode="max"`` once it is ``>= target``.
    ``max_epochs`` stops the run after that many passes, whichever comes first.

    The metric is written by another handler, usually ``UnlearningMetricsHandler``, at the same event: ignite
    runs an event's handlers in the order they were attached, so **attach this stopper after the metrics
    handler** (list it after it in ``train_handlers``). The latest value in ``engine.state.metrics`` is used;
    when the metric is missing the check is skipped (logged at debug level).

    After a stop, ``self.stopped_epoch`` holds the epoch and ``self.reason`` ``"target"`` or ``"budget"``.

    Args:
        target: the value to reach.
        metric_name: the key in ``engine.state.metrics``.
        mode: ``"min"`` (stop at or below ``target``) or ``"max"`` (stop at or above).
        max_epochs: optional budget of passes; ``None`` leaves only the engine's own ``max_epochs``.
        name: logger name; ``None`` uses the engine's logger.

    Raises:
        ValueError: for an unknown mode or a ``max_epochs`` below 1.
    """

    def __init__(
        self,
        target: float,
        metric_name: str = "forget_accuracy",
        mode: str = "min",
        max_epochs: int | None = None,
        name: str | None = None,
    ) -> None:
        if mode not in STOP_MODES:
            raise ValueError(f"mode must be one of {STOP_MODES}, got {mode!r}.")
        if max_epochs is not None and (int(max_epochs) != max_epochs or max_epochs < 1):
            raise ValueError(f"max_epochs must be a positive integer or None, got {max_epochs}.")
        self.target = float(target)
        self.metric_name = metric_name
        self.mode = mode
        self.max_epochs = None if max_epochs is None else int(max_epochs)
        self.logger = logging.getLogger(name) if name is not None else None
        self.stopped_epoch: int | None = None
        self.reason: str | None = None

    def attach(self, engine: Engine) -> None:
        """Check after every epoch of ``engine``; attaching twice to one engine is a no-op."""
        if self.logger is None:
            self.logger = engine.logger
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def reached(self, value: float) -> bool:
        """Whether ``value`` meets the target in this stopper's mode."""
        return value <= self.target if self.mode == "min" else value >= self.target

    def __call__(self, engine: Engine) -> None:
        """Terminate ``engine`` when the target is met or the budget spent."""
        logger = self.logger if self.logger is not None else engine.logger
        value = engine.state.metrics.get(self.metric_name)
        if value is not None and is_scalar(value) and self.reached(float(value)):
            self._stop(engine, "target")
            logger.info(
                f"ForgetTargetStopper: {self.metric_name} {float(value):.4f} reached the target {self.target:.4f} "
                f"({self.mode}) after epoch {engine.state.epoch}; stopping."
            )
            return
        if value is None:
            logger.debug(f"ForgetTargetStopper: no metric {self.metric_name!r} at epoch {engine.state.epoch}.")
        if self.max_epochs is not None and engine.state.epoch >= self.max_epochs:
            self._stop(engine, "budget")
            logger.info(f"ForgetTargetStopper: pass budget of {self.max_epochs} epochs spent; stopping.")

    def _stop(self, engine: Engine, reason: str) -> None:
        self.stopped_epoch = engine.state.epoch
        self.reason = reason
        engine.terminate()
