"""monai_unlearn.engines: unlearning trainers in the style of ``monai.engines``."""

from __future__ import annotations

from monai_unlearn.engines.unlearning_trainer import UnlearningTrainer, as_psg_config, split_prepared_batch

__all__ = ["UnlearningTrainer", "as_psg_config", "split_prepared_batch"]
