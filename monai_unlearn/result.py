"""The record of one unlearning run: what ran, how long, and the evaluations before and after."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from monai_unlearn.core.config import method_name
from monai_unlearn.metrics.headline import format_table, headline_rows
from monai_unlearn.metrics.retrain_gap import retrain_gap

__all__ = ["UnlearningResult", "optimizer_record", "run_result"]


@dataclass
class UnlearningResult:
    """The record of one unlearning run.

    Attributes:
        method: ``"PSG"`` or ``"Boundary Shrink"``.
        config: the PSG parameters.
        optimizer: the optimizer's class and hyper-parameters.
        epochs: passes over the forget set that ran.
        iterations: unlearning steps that ran.
        time_s: wall time of the unlearning steps alone (evaluation excluded).
        before: ``evaluate_unlearning`` of the original model (``None`` when evaluation was off).
        after: the same for the revised model.
        retrained: the same for a retrained model, when one was given.
        retrain_gap: absolute differences between ``after`` and ``retrained`` headline numbers.
        history: per-epoch mean losses and boundary flip rates.
        stopping: with a regime: the regime decision, the calibrated target, every check, why the run stopped,
            whether it rewound, the withdrawn labels no boundary target took (``withdrawn_targets``) and, when the
            classification head was revised alone (``PSGConfig.withdrawn_scope``), ``head_only``: its name and
            whether the run gave that up for the whole network; ``None`` for a fixed number of passes.
    """

    method: str
    config: dict[str, Any]
    optimizer: dict[str, Any]
    epochs: int
    iterations: int
    time_s: float
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    retrained: dict[str, Any] | None = None
    retrain_gap: dict[str, float] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    stopping: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-serialisable dictionary."""
        return asdict(self)

    def table(self) -> str:
        """A plain-text before/after table of the headline numbers."""
        rows = {}
        for name in ("before", "after", "retrained"):
            evaluation = getattr(self, name)
            if evaluation is not None:
                rows[name] = headline_rows(evaluation)
        return format_table(rows)


def optimizer_record(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's class name and scalar hyper-parameters, for reports."""
    return {"name": type(optimizer).__name__, **{
        k: v for k, v in optimizer.defaults.items() if isinstance(v, (int, float, bool, str))
    }}


def run_result(trainer: Any, history: Any, metrics: Any, stopping: dict[str, Any] | None = None) -> UnlearningResult:
    """The ``UnlearningResult`` of a finished ``UnlearningTrainer`` run, from its ``UnlearningHistoryHandler`` and
    ``UnlearningMetricsHandler`` (evaluations are ``None`` when the metrics handler was not attached) and the
    regime's stopping record when one stopped it. ``unlearn()`` and the bundle both build their record here."""
    config = trainer.unlearner.config
    after, retrained = metrics.latest, metrics.retrained
    if stopping is not None:  # the labels no boundary target took (the regime's withdrawn classes), and the head
        unlearner = trainer.unlearner
        head = None if unlearner.head is None else {"name": unlearner.head[0], "given_up": unlearner.head_given_up}
        stopping = {**stopping, "withdrawn_targets": list(unlearner.withdrawn_classes or []), "head_only": head}
    gap = retrain_gap(headline_rows(after), headline_rows(retrained)) if after and retrained else None
    return UnlearningResult(
        method=method_name(config), config=config.to_dict(), optimizer=optimizer_record(trainer.optimizer),
        epochs=trainer.state.epoch, iterations=trainer.unlearner.iteration, time_s=history.elapsed_s,
        before=metrics.before, after=after, retrained=retrained, retrain_gap=gap, history=history.history,
        stopping=stopping,
    )
