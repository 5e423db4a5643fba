"""monai_unlearn.engines."""
