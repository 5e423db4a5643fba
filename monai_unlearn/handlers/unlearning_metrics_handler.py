"""Forget / remain / test accuracy and membership inference of the engine's network during unlearning."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_unlearn.core.batch import default_prepare_batch
from monai_unlearn.metrics.evaluation import evaluate_unlearning
from monai_unlearn.metrics.segmentation import is_segmentation_evaluation, segmentation_summary_rows

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["UnlearningMetricsHandler", "METRIC_NAMES"]

METRIC_NAMES = ("forget_accuracy", "remain_accuracy", "test_accuracy", "mia")


def metric_values(result: dict[str, Any]) -> dict[str, float | None]:
    """The engine metrics of an evaluation record: ``METRIC_NAMES`` for accuracy, the headline Dice names else."""
    if is_segmentation_evaluation(result):
        return segmentation_summary_rows(result)
    return {
        "forget_accuracy": result["forget"]["accuracy"],
        "remain_accuracy": None if result.get("remain") is None else result["remain"]["accuracy"],
        "test_accuracy": None if result.get("test") is None else result["test"]["accuracy"],
        "mia": None if result.get("mia") is None else float(result["mia"]["mean"]),
    }


class UnlearningMetricsHandler:
    """Evaluates ``engine.network`` on forget, remain and test data while it is being unlearned.

    Uses ``evaluate_unlearning`` (accuracy per set and per class, and the membership-inference score of the
    forget set against the test set), or ``evaluate_fn(network)`` when given (e.g. ``evaluate_segmentation``
    over whole-image loaders). Evaluations happen:

    - on ``Events.STARTED``: the original model, kept in ``self.before``;
    - every ``interval`` epochs (``epoch_level=True``) or iterations (``epoch_level=False``); never with
      ``interval=None``;
    - on ``Events.COMPLETED``, unless the last evaluation was at the final iteration.

    Each evaluation writes ``forget_accuracy``, ``remain_accuracy``, ``test_accuracy`` and ``mia`` (the attack's
    mean score; 0.5 is chance) into ``engine.state.metrics`` (only those that could be computed; for a
    segmentation record, its headline Dice numbers such as ``forget_dice`` and ``remain_dice``), appends
    ``{"iteration", "epoch", "forget_accuracy", "remain_accuracy", "test_accuracy", "mia", "time_s"}`` to
    ``self.history`` (``None`` for what was not computed), keeps the full evaluation in ``self.latest``, and logs
    one line. The network is evaluated in eval mode without gradients; its mode is restored afterwards.

    Attach it before handlers that read its metrics at the same event (``ForgetTargetStopper``): ignite runs a
    event's handlers in attach order.

    Args:
        forget_data_loader: the forget data.
        remain_data_loader: optional remain data (or a sample of it).
        test_data_loader: optional held-out data; needed for the membership-inference score.
        num_classes: number of classes for per-class reports (``None``: from the logits).
        interval: evaluate every ``interval`` epochs or iterations; ``None``: only at the start and the end.
        epoch_level: count ``interval`` in epochs (``True``) or iterations (``False``).
        mia: compute the membership-inference score (needs ``test_data_loader``).
        prepare_batch: batch to ``(image, label)``, called as ``prepare_batch(batch, device, non_blocking)``.
        name: logger name; ``None`` uses the engine's logger.
        evaluate_fn: ``callable(network) -> record`` replacing the built-in evaluation; its record should be shaped
            like ``evaluate_unlearning``'s or ``evaluate_segmentation``'s. The loaders above are then unused.
        network: the module to evaluate; ``None`` uses ``engine.network``.
        retrained_network: a model retrained without the forget set, evaluated the same way once at the start
            (kept in ``self.retrained``, for the gap to retraining); it only scores, it never feeds the run.

    Raises:
        ValueError: when ``interval < 1``.
    """

    def __init__(
        self,
        forget_data_loader: Iterable,
        remain_data_loader: Iterable | None = None,
        test_data_loader: Iterable | None = None,
        num_classes: int | None = None,
        interval: int | None = 1,
        epoch_level: bool = True,
        mia: bool = True,
        prepare_batch: Callable = default_prepare_batch,
        name: str | None = None,
        evaluate_fn: Callable[[torch.nn.Module], dict[str, Any]] | None = None,
        network: torch.nn.Module | None = None,
        retrained_network: torch.nn.Module | None = None,
    ) -> None:
        if interval is not None and (int(interval) != interval or interval < 1):
            raise ValueError(f"interval must be a positive integer or None, got {interval}.")
        self.forget_data_loader = forget_data_loader
        self.remain_data_loader = remain_data_loader
        self.test_data_loader = test_data_loader
        self.num_classes = num_classes
        self.interval = None if interval is None else int(interval)
        self.evaluate_fn = evaluate_fn
        self.network = network
        self.retrained_network = retrained_network
        self.retrained: dict[str, Any] | None = None
        self.epoch_level = epoch_level
        self.mia = mia
        self.prepare_batch = prepare_batch
        self.name = name
        self.logger = logging.getLogger(name) if name is not None else None
        self.before: dict[str, Any] | None = None
        self.latest: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.evaluation_time_s = 0.0
        self._last_iteration: int | None = None

    def attach(self, engine: Engine) -> None:
        """Register the evaluations on ``engine``; attaching twice to one engine is a no-op."""
        if self.logger is None:
            self.logger = engine.logger
        if engine.has_event_handler(self._started, Events.STARTED):
            return
        engine.add_event_handler(Events.STARTED, self._started)
        if self.interval is not None:
            event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
            engine.add_event_handler(event(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self.ensure_latest)

    def _started(self, engine: Engine) -> None:
        self.history = []
        self.evaluation_time_s = 0.0
        self.before = self.evaluate(engine)
        if self.retrained_network is not None:
            device = getattr(engine.state, "device", None)
            self.retrained = self._evaluate(self.retrained_network.to(device) if device is not None else
                                            self.retrained_network, engine)

    def ensure_latest(self, engine: Engine) -> dict[str, Any]:
        """Evaluate unless the last evaluation was at the engine's current iteration; return the latest."""
        if self._last_iteration != engine.state.iteration or self.latest is None:
            self.evaluate(engine)
        return self.latest  # type: ignore[return-value]

    def __call__(self, engine: Engine) -> None:
        """Evaluate now (the periodic callback)."""
        self.evaluate(engine)

    def _evaluate(self, network: torch.nn.Module, engine: Engine) -> dict[str, Any]:
        if self.evaluate_fn is not None:
            return self.evaluate_fn(network)
        device = getattr(engine.state, "device", None)
        return evaluate_unlearning(
            network,
            self.forget_data_loader,
            self.remain_data_loader,
            self.test_data_loader,
            num_classes=self.num_classes,
            device=device,
            prepare_batch=self.prepare_batch,
            amp=bool(getattr(engine, "amp", False)) and isinstance(device, torch.device) and device.type == "cuda",
            # evaluate_unlearning skips the attack when a side has fewer samples than splits
            mia_splits=5 if self.mia else sys.maxsize,
        )

    def evaluate(self, engine: Engine) -> dict[str, Any]:
        """Evaluate ``engine.network`` now, update the engine's metrics, the history and the log.

        Returns:
            the full ``evaluate_unlearning`` output.
        """
        network = self.network if self.network is not None else engine.network
        start = time.perf_counter()
        result = self._evaluate(network, engine)
        elapsed = time.perf_counter() - start
        self.evaluation_time_s += elapsed
        values = metric_values(result)
        for key, value in values.items():
            if value is not None:
                engine.state.metrics[key] = value
        self.latest = result
        self._last_iteration = engine.state.iteration
        self.history.append(
            {"iteration": engine.state.iteration, "epoch": engine.state.epoch, **values, "time_s": elapsed}
        )
        logger = self.logger if self.logger is not None else engine.logger
        text = " ".join(f"{k}: {v:.4f}" for k, v in values.items() if v is not None)
        logger.info(f"Unlearning evaluation (epoch {engine.state.epoch}, iteration {engine.state.iteration}): {text}")
        return result
