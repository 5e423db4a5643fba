"""monai_unlearn.deploy."""
