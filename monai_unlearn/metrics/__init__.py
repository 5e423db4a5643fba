"""monai_unlearn.metrics: accuracy, membership inference and the gap to a retrained model."""

from __future__ import annotations

from .classification import accuracy_report, collect_outputs, evaluate_classifier, per_sample_loss
from .evaluation import evaluate_unlearning, summary_rows
from .membership import membership_inference_score
from .retrain_gap import DEFAULT_IGNORED_KEYS, prediction_agreement, retrain_gap

__all__ = [
    "accuracy_report",
    "collect_outputs",
    "evaluate_classifier",
    "per_sample_loss",
    "membership_inference_score",
    "evaluate_unlearning",
    "summary_rows",
    "retrain_gap",
    "prediction_agreement",
    "DEFAULT_IGNORED_KEYS",
]

from .segmentation import (  # noqa: E402
    collect_segmentation_stats,
    dice_counts,
    dice_from_counts,
    evaluate_segmentation,
    is_segmentation_evaluation,
    segmentation_report,
    segmentation_summary_rows,
)

__all__ += [
    "collect_segmentation_stats",
    "dice_counts",
    "dice_from_counts",
    "evaluate_segmentation",
    "is_segmentation_evaluation",
    "segmentation_report",
    "segmentation_summary_rows",
]
from .membership_variants import MIA_ATTACKS, evaluate_mia_variants, fit_threshold, membership_features, mia_efficacy, threshold_attack

__all__ += ["MIA_ATTACKS", "membership_features", "fit_threshold", "threshold_attack", "mia_efficacy", "evaluate_mia_variants"]
