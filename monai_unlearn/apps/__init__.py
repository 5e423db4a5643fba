"""monai_unlearn.apps: offline data sets (FashionMNIST, real-volume slices, brain-region patches) for the demo."""

from __future__ import annotations

from .brain_regions import (
    BRAIN_REGION_DEVICES,
    BRAIN_REGIONS,
    brain_region_datalist,
    build_brain_region_patches,
    load_brain_region_volumes,
    read_aal_labels,
)
from .fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FASHION_MNIST_INSTALL,
    fashion_mnist_dataset,
    load_fashion_mnist,
    read_idx,
)
from .volume_slices import (
    INSTALL_COMMANDS,
    INVESALIUS_DIR,
    ITK_EXAMPLES_DIR,
    MRICRON_DIR,
    VOLUME_SLICE_CLASSES,
    VOLUME_SOURCES,
    VolumeSource,
    build_volume_slice_datalist,
    datalist_counts,
    default_data_dirs,
    default_pyradiomics_dir,
    load_source_volume,
    read_nrrd,
    sources_available,
    split_train_test,
)

__all__ = [
    "BRAIN_REGION_DEVICES",
    "BRAIN_REGIONS",
    "brain_region_datalist",
    "build_brain_region_patches",
    "load_brain_region_volumes",
    "read_aal_labels",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_INSTALL",
    "fashion_mnist_dataset",
    "load_fashion_mnist",
    "read_idx",
    "INSTALL_COMMANDS",
    "INVESALIUS_DIR",
    "ITK_EXAMPLES_DIR",
    "MRICRON_DIR",
    "VOLUME_SLICE_CLASSES",
    "VOLUME_SOURCES",
    "VolumeSource",
    "build_volume_slice_datalist",
    "datalist_counts",
    "default_data_dirs",
    "default_pyradiomics_dir",
    "load_source_volume",
    "read_nrrd",
    "sources_available",
    "split_train_test",
]

from .tissue_slices import (  # noqa: E402
    TISSUE_CLASSES,
    TISSUE_DEVICES,
    build_tissue_slice_datalist,
    load_mni152_tissue,
    split_tissue_cases,
    tissue_map,
)

__all__ += [
    "TISSUE_CLASSES",
    "TISSUE_DEVICES",
    "build_tissue_slice_datalist",
    "load_mni152_tissue",
    "split_tissue_cases",
    "tissue_map",
]
