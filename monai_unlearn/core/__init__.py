"""monai_unlearn.core."""
