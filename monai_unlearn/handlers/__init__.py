"""monai_unlearn.handlers: ignite/MONAI handlers for unlearning, metrics, stopping and reports."""

from __future__ import annotations

from monai_unlearn.handlers.calibrated_stop_handler import CalibratedStopHandler, regime_stop_handler
from monai_unlearn.handlers.forget_score_handler import ForgetScoreHandler
from monai_unlearn.handlers.forget_target_stopper import ForgetTargetStopper
from monai_unlearn.handlers.model_composition_handler import ModelCompositionHandler
from monai_unlearn.handlers.psg_unlearning_handler import PSGUnlearningHandler
from monai_unlearn.handlers.unlearning_checkpoint_handler import UnlearningCheckpointHandler
from monai_unlearn.handlers.unlearning_history_handler import UnlearningHistoryHandler
from monai_unlearn.handlers.unlearning_metrics_handler import METRIC_NAMES, UnlearningMetricsHandler
from monai_unlearn.handlers.unlearning_report_handler import UnlearningReportHandler

__all__ = [
    "CalibratedStopHandler",
    "ForgetScoreHandler",
    "ForgetTargetStopper",
    "METRIC_NAMES",
    "ModelCompositionHandler",
    "PSGUnlearningHandler",
    "UnlearningCheckpointHandler",
    "UnlearningHistoryHandler",
    "UnlearningMetricsHandler",
    "UnlearningReportHandler",
    "regime_stop_handler",
]
