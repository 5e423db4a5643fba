"""Pure-torch core of PSG unlearning: boundary search, targets, losses and the unlearning step."""

from __future__ import annotations

from monai_unlearn.core.batch import cycle, default_prepare_batch, label_index_for_image, labels_as_index
from monai_unlearn.core.boundary_search import BoundarySearchResult, PSGBoundarySearch, frozen_reference
from monai_unlearn.core.composition import compose_models, compose_state_dicts, finetune_on_remain, head_prefixes_for
from monai_unlearn.core.checks import IGNORE_INDEX, class_mask, mask_forgotten_classes, validate_first_batch
from monai_unlearn.core.config import PSGConfig
from monai_unlearn.core.losses import distillation_loss, forget_loss, remain_loss, soft_cross_entropy, withdrawn_loss
from monai_unlearn.core.noise import NOISE_TYPES, sample_noise
from monai_unlearn.core.forget_selector import parse_forget_selector
from monai_unlearn.core.selection import (
    ForgetSelectionError,
    normalize_label,
    read_ids_file,
    select_forget,
    select_forget_indices,
)
from monai_unlearn.core.schedules import LAMBDA_SCHEDULES, STEP_SCHEDULES, lambda_at, step_size_at
from monai_unlearn.core.targets import boundary_targets, targets_differ
from monai_unlearn.core.unlearner import PSGUnlearner, check_labels
