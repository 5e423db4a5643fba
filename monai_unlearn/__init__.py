"""monai_unlearn: targeted unlearning for MONAI models with perturbed sign-gradient boundary search."""

from __future__ import annotations

__version__ = "0.1.0"

from monai_unlearn.core import PSGConfig, PSGUnlearner, select_forget
from monai_unlearn.runner import UnlearningResult, unlearn

__all__ = ["PSGConfig", "PSGUnlearner", "UnlearningResult", "select_forget", "unlearn", "__version__"]
