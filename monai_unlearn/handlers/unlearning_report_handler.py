"""Write the unlearning record (JSON) and its plots when the run completes."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai.utils import IgniteInfo, min_version, optional_import

from monai_unlearn.core.config import PSGConfig
from monai_unlearn.handlers.unlearning_metrics_handler import UnlearningMetricsHandler
from monai_unlearn.io import atomic_write_bytes, json_default
from monai_unlearn.metrics.plots import curves_figure, has_matplotlib, per_class_figure, write_png
from monai_unlearn.core.config import method_name

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["UnlearningReportHandler"]

CURVES_FILENAME = "unlearning_curves.png"
PER_CLASS_FILENAME = "per_class_accuracy.png"


class UnlearningReportHandler:
    """On ``Events.COMPLETED``, writes the run's record as JSON and plots it, next to the revised model.

    The record (also kept in ``self.record``) holds ``method`` (``"PSG"``, or ``"Boundary Shrink"`` for that
    special case), ``config`` (the PSG parameters when the engine has them: ``UnlearningTrainer`` or a trainer
    with ``PSGUnlearningHandler``, else ``None``), ``optimizer`` (class and scalar hyper-parameters), ``before``
    and ``after`` (full ``evaluate_unlearning`` outputs from ``metrics_handler``), ``history`` (its per-evaluation
    numbers), ``iterations``, ``epochs``, ``wall_time_s`` (from this handler's ``Events.STARTED`` to completion),
    ``evaluation_time_s`` (the part of it spent in ``metrics_handler``'s evaluations), ``unlearning_time_s``
    (the difference) and ``extra``. The JSON is written atomically (temporary file in the same folder, then
    ``os.replace``).

    With ``plot=True`` and matplotlib installed it also writes ``unlearning_curves.png`` (forget and remain
    accuracy and the membership-inference score over iterations) and ``per_class_accuracy.png`` (per-class
    accuracy before vs after, one panel per evaluated set). Figures are drawn with the Agg canvas directly, so
    pyplot's global backend is not touched.

    The final evaluation is taken from ``metrics_handler``; when it has not evaluated the final model yet (for
    instance because this handler was attached first), the report asks it to, so attach order does not matter.

    Args:
        output_dir: the folder to write into (created when missing).
        metrics_handler: the ``UnlearningMetricsHandler`` attached to the same engine.
        filename: the JSON file's name.
        plot: also write the PNG plots.
        extra: more JSON-serialisable information to store under ``"extra"`` (dataset, forget selector, ...).
        name: logger name; ``None`` uses the engine's logger.

    Raises:
        TypeError: when ``metrics_handler`` is not an ``UnlearningMetricsHandler``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        metrics_handler: UnlearningMetricsHandler,
        filename: str = "unlearning_report.json",
        plot: bool = True,
        extra: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(metrics_handler, UnlearningMetricsHandler):
            raise TypeError(f"metrics_handler must be an UnlearningMetricsHandler, got {type(metrics_handler).__name__}.")
        self.output_dir = Path(output_dir)
        self.metrics_handler = metrics_handler
        self.filename = filename
        self.plot = plot
        self.extra = dict(extra) if extra is not None else None
        self.logger = logging.getLogger(name) if name is not None else None
        self.record: dict[str, Any] | None = None
        self.paths: dict[str, Path] = {}
        self._start: float | None = None
        self._evaluation_at_start = 0.0

    def attach(self, engine: Engine) -> None:
        """Time the run from ``Events.STARTED`` and write the report on ``Events.COMPLETED``; idempotent."""
        if self.logger is None:
            self.logger = engine.logger
        if engine.has_event_handler(self._started, Events.STARTED):
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.COMPLETED, self)

    def _started(self, engine: Engine) -> None:
        self._start = time.perf_counter()
        self._evaluation_at_start = self.metrics_handler.evaluation_time_s

    def __call__(self, engine: Engine) -> dict[str, Any]:
        """Build the record from ``engine`` and write the JSON and plots; return the record."""
        after = self.metrics_handler.ensure_latest(engine)
        wall = 0.0 if self._start is None else time.perf_counter() - self._start
        evaluation = max(0.0, self.metrics_handler.evaluation_time_s - self._evaluation_at_start)
        config = _engine_config(engine)
        optimizer = getattr(engine, "optimizer", None)
        record: dict[str, Any] = {
            "method": method_name(PSGConfig(**config)) if config is not None else "PSG",
            "config": config,
            "optimizer": None if optimizer is None else _optimizer_record(optimizer),
            "iterations": int(engine.state.iteration),
            "epochs": int(engine.state.epoch),
            "wall_time_s": wall,
            "evaluation_time_s": evaluation,
            "unlearning_time_s": max(0.0, wall - evaluation),
            "before": self.metrics_handler.before,
            "after": after,
            "history": list(self.metrics_handler.history),
            "extra": self.extra,
        }
        self.record = record
        self.write(record)
        return record

    def write(self, record: Mapping[str, Any]) -> dict[str, Path]:
        """Write ``record`` as JSON (atomically) and, when enabled, the plots; return the written paths."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        json_path = self.output_dir / self.filename
        text = json.dumps(record, indent=2, default=json_default)
        atomic_write_bytes(json_path, text.encode("utf-8"))
        self.paths = {"report": json_path}
        logger = self.logger if self.logger is not None else logging.getLogger(__name__)
        if self.plot:
            if not has_matplotlib:
                logger.warning("matplotlib is not installed: the unlearning plots are skipped.")
            else:
                self.paths["curves"] = self.output_dir / CURVES_FILENAME
                write_png(curves_figure(record.get("history") or []), self.paths["curves"])
                if record.get("before") is not None and record.get("after") is not None:
                    self.paths["per_class"] = self.output_dir / PER_CLASS_FILENAME
                    write_png(per_class_figure(record["before"], record["after"]), self.paths["per_class"])
        logger.info(f"Unlearning report written to {json_path}")
        return self.paths


def _engine_config(engine: Engine) -> dict[str, Any] | None:
    config = getattr(engine.state, "unlearning_config", None)
    if config is None:
        unlearner = getattr(engine, "unlearner", None)
        config = getattr(unlearner, "config", None)
    if isinstance(config, PSGConfig):
        return config.to_dict()
    return None if config is None else dict(config)


def _optimizer_record(optimizer: Any) -> dict[str, Any]:
    defaults = getattr(optimizer, "defaults", {}) or {}
    return {"name": type(optimizer).__name__, **{k: v for k, v in defaults.items() if isinstance(v, (int, float, bool, str))}}
