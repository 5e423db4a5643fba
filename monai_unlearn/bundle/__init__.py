"""monai_unlearn.bundle."""
