"""Baseline unlearning methods behind one interface with PSG: ``run_method(name, model, forget, remain, ...)``.

Retrain, Fine-tune, NegGrad+, CF-k, EU-k (with a real re-initialisation), SCRUB (with a separate frozen teacher),
SalUn (saliency-masked random relabelling), l1-sparse, Boundary Shrink and PSG (the last two through
``monai_unlearn.runner.unlearn``).
"""

from __future__ import annotations

from .common import freeze_except, frozen_teacher, last_k_blocks, make_optimizer, model_blocks, reinitialize, train_epochs
from .l1_sparse import l1_sparse
from .last_k import cf_k, eu_k
from .neggrad import neggrad_plus
from .registry import METHODS, MethodSpec, method_names, run_method
from .retrain import finetune, retrain
from .salun import saliency_mask, salun
from .scrub import scrub, teacher_student_kl

__all__ = [
    "METHODS",
    "MethodSpec",
    "method_names",
    "run_method",
    "retrain",
    "finetune",
    "neggrad_plus",
    "cf_k",
    "eu_k",
    "scrub",
    "teacher_student_kl",
    "salun",
    "saliency_mask",
    "l1_sparse",
    "model_blocks",
    "last_k_blocks",
    "reinitialize",
    "freeze_except",
    "frozen_teacher",
    "make_optimizer",
    "train_epochs",
]
