"""A harder classification task: 2D patches from named brain regions of the AAL atlas.

The AAL atlas in ``mricron-data`` lies on the 181x217x181, 1 mm grid of the Colin27 single-subject T1
(``ch2.nii.gz``). The nilearn MNI152 T1 template, resampled onto the same grid, acts as a second scanner,
so every patch carries a device: ``"colin27"`` or ``"mni152"``. A patch is an axial ``patch_size`` square
centred on a voxel drawn at random inside one region (left and right hemispheres merged); its label is the
region. Intensities are scaled per volume (not per patch) to ``[0, 1]``, so the two devices differ in
contrast as real scanners do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_unlearn.apps.volume_slices import INSTALL_COMMANDS, MRICRON_DIR

__all__ = [
    "BRAIN_REGIONS",
    "BRAIN_REGION_DEVICES",
    "read_aal_labels",
    "load_brain_region_volumes",
    "build_brain_region_patches",
    "brain_region_datalist",
]

BRAIN_REGIONS: tuple[str, ...] = (
    "Precentral",
    "Frontal_Sup",
    "Frontal_Mid",
    "Insula",
    "Hippocampus",
    "Occipital_Mid",
    "Precuneus",
    "Thalamus",
    "Temporal_Mid",
    "Cerebelum_Crus1",
)
"""The default 10 AAL regions (hemispheres merged), in label order."""

BRAIN_REGION_DEVICES: tuple[str, ...] = ("colin27", "mni152")
"""The devices: Colin27 (the atlas's own T1) and the MNI152 template resampled to its grid."""


def _missing(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} not found at {path}. Install it with `{INSTALL_COMMANDS['mricron']}` (or run "
        "scripts/install_data.sh as root), or pass `templates_dir=` pointing at the mricron templates folder."
    )


def read_aal_labels(templates_dir: str | os.PathLike = MRICRON_DIR) -> dict[str, list[int]]:
    """Read the AAL label names and group them by region with the hemisphere suffix removed.

    Args:
        templates_dir: folder holding ``aal.nii.txt`` (lines ``<index> <name> <code>``).

    Returns:
        a mapping from region name (e.g. ``"Hippocampus"``) to its atlas indices (e.g. ``[37, 38]``).

    Raises:
        FileNotFoundError: when the label file is missing; the message gives the install command.
    """
    path = Path(templates_dir) / "aal.nii.txt"
    if not path.is_file():
        raise _missing(path, "AAL label file")
    regions: dict[str, list[int]] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        name = parts[1]
        for suffix in ("_L", "_R"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        regions.setdefault(name, []).append(int(parts[0]))
    return regions


def _scale_volume(vol: np.ndarray) -> np.ndarray:
    """Scale a volume to [0, 1] with its 99.5th percentile of non-zero voxels as the top."""
    nz = vol[vol > 0]
    hi = float(np.percentile(nz, 99.5)) if nz.size else 1.0
    return np.clip(vol / max(hi, 1e-6), 0.0, 1.0).astype(np.float32)


def load_brain_region_volumes(
    templates_dir: str | os.PathLike = MRICRON_DIR, devices: Sequence[str] = BRAIN_REGION_DEVICES
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Load the AAL atlas and the device volumes on its grid.

    Args:
        templates_dir: the mricron templates folder (``aal.nii.gz``, ``ch2.nii.gz``).
        devices: any of ``"colin27"`` and ``"mni152"``.

    Returns:
        ``(atlas, volumes)``: the integer atlas (181x217x181) and, per device, a float32 volume on the same
        grid scaled to ``[0, 1]``.

    Raises:
        FileNotFoundError: when a file or nilearn is missing; the message gives the install command.
        ValueError: for an unknown device.
    """
    root = Path(templates_dir)
    unknown = [d for d in devices if d not in BRAIN_REGION_DEVICES]
    if unknown:
        raise ValueError(f"unknown devices {unknown}; choose from {BRAIN_REGION_DEVICES}.")
    for name, what in (("aal.nii.gz", "AAL atlas"), ("ch2.nii.gz", "Colin27 T1")):
        if not (root / name).is_file():
            raise _missing(root / name, what)
    atlas_img = nib.load(root / "aal.nii.gz")
    atlas = np.asarray(atlas_img.dataobj).astype(np.int16)
    volumes: dict[str, np.ndarray] = {}
    if "colin27" in devices:
        ch2 = nib.load(root / "ch2.nii.gz")
        if not np.allclose(ch2.affine, atlas_img.affine) or ch2.shape != atlas.shape:
            raise ValueError("ch2.nii.gz and aal.nii.gz are not on the same grid.")
        volumes["colin27"] = _scale_volume(np.asarray(ch2.dataobj, dtype=np.float32))
    if "mni152" in devices:
        try:
            from nilearn.datasets import load_mni152_template
        except ImportError as e:
            raise FileNotFoundError(f"the mni152 device needs nilearn: `{INSTALL_COMMANDS['nilearn']}`.") from e
        from scipy.ndimage import affine_transform

        mni = load_mni152_template(resolution=1)
        # voxel of the atlas grid -> voxel of the template
        matrix = np.linalg.inv(mni.affine) @ atlas_img.affine
        data = np.asarray(mni.get_fdata(dtype=np.float32))
        resampled = affine_transform(data, matrix[:3, :3], offset=matrix[:3, 3], output_shape=atlas.shape, order=1)
        volumes["mni152"] = _scale_volume(resampled)
    return atlas, {d: volumes[d] for d in devices}


def build_brain_region_patches(
    n_per_class: int = 100,
    patch_size: int = 32,
    seed: int = 0,
    regions: Sequence[str] = BRAIN_REGIONS,
    devices: Sequence[str] = BRAIN_REGION_DEVICES,
    templates_dir: str | os.PathLike = MRICRON_DIR,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample labelled axial patches centred inside named AAL regions, from each device.

    Centres are drawn independently for each device, so the devices hold different patches of the same
    regions. The atlas grid is zero padded so patches near the border keep their size.

    Args:
        n_per_class: patches per region **per device** (``N = n_per_class * len(regions) * len(devices)``).
        patch_size: side of the square patches.
        seed: seed of the centre sampling.
        regions: AAL region names with the hemisphere suffix removed (see :func:`read_aal_labels`); the label
            of a patch is the index of its region in this sequence.
        devices: any of ``"colin27"`` and ``"mni152"``.
        templates_dir: the mricron templates folder.

    Returns:
        ``(images, labels, devices)``: float32 ``(N, 1, patch_size, patch_size)`` in ``[0, 1]``, int64
        ``(N,)`` in ``[0, len(regions))``, and a ``(N,)`` array of device names. Order: device, region,
        sample.

    Raises:
        FileNotFoundError: when the data is missing; the message gives the install command.
        ValueError: for an unknown region or device, or bad sizes.
    """
    if n_per_class < 1 or patch_size < 2:
        raise ValueError(f"n_per_class and patch_size must be positive, got {n_per_class}, {patch_size}.")
    names = read_aal_labels(templates_dir)
    unknown = [r for r in regions if r not in names]
    if unknown:
        raise ValueError(f"unknown AAL regions {unknown}; known: {sorted(names)}.")
    atlas, volumes = load_brain_region_volumes(templates_dir, devices)
    half = patch_size // 2
    pad = ((half, patch_size - half), (half, patch_size - half), (0, 0))
    centres = {r: np.argwhere(np.isin(atlas, names[r])) for r in regions}
    images, labels, device_names = [], [], []
    for d_index, device in enumerate(devices):
        vol = np.pad(volumes[device], pad)
        rng = np.random.default_rng([seed, d_index])
        for label, region in enumerate(regions):
            pts = centres[region]
            if len(pts) == 0:
                raise ValueError(f"AAL region {region!r} has no voxels.")
            picks = pts[rng.choice(len(pts), size=n_per_class, replace=len(pts) < n_per_class)]
            # after padding, the patch of centre (x, y) starts at (x, y)
            patches = np.stack([vol[x : x + patch_size, y : y + patch_size, z] for x, y, z in picks])
            images.append(patches)
            labels.append(np.full(n_per_class, label, dtype=np.int64))
            device_names.extend([device] * n_per_class)
    return (
        np.concatenate(images)[:, None].astype(np.float32),
        np.concatenate(labels),
        np.asarray(device_names),
    )


def brain_region_datalist(
    images: np.ndarray, labels: np.ndarray, devices: np.ndarray, regions: Sequence[str] = BRAIN_REGIONS
) -> list[dict]:
    """Wrap the arrays from :func:`build_brain_region_patches` as an in-memory datalist.

    Args:
        images: ``(N, 1, H, W)`` patches.
        labels: ``(N,)`` labels.
        devices: ``(N,)`` device names.
        regions: the region names used to build the patches.

    Returns:
        a list of ``{"image": (1, H, W) array, "label": int, "class_name": str, "device": str, "slice": int}``
        where ``slice`` is the running index inside the device, so
        :func:`monai_unlearn.apps.volume_slices.split_train_test` applies unchanged.
    """
    counters: dict[str, int] = {}
    out = []
    for img, lab, dev in zip(images, labels, devices):
        dev = str(dev)
        idx = counters.get(dev, 0)
        counters[dev] = idx + 1
        out.append({"image": img, "label": int(lab), "class_name": regions[int(lab)], "device": dev, "slice": idx})
    return out
