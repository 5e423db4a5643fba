"""monai_unlearn.metrics."""
