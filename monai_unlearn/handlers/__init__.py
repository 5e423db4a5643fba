"""monai_unlearn.handlers."""
