"""monai_unlearn: targeted unlearning for MONAI models with perturbed sign-gradient boundary search."""

from __future__ import annotations

__version__ = "0.1.0"
