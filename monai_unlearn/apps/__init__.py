"""monai_unlearn.apps."""
