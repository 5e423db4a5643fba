"""A small brain-tissue segmentation task from the MNI152 template (nilearn, offline, BSD-3).

The MNI152 T1 template (2 mm) and nilearn's grey- and white-matter probability maps and brain mask give a
4-class tissue map per voxel:

====  ==========  =====================================================================
 0    background  outside the brain mask
 1    csf         inside the mask where ``1 - GM - WM`` is the largest of the three
 2    gm          grey matter: the GM probability is the largest
 3    wm          white matter: the WM probability is the largest
====  ==========  =====================================================================

Axial slices through the brain are padded to a square (in-plane aspect kept), resized to ``image_size``
(bilinear for the image, nearest for the label map) and written as 2D NIfTI pairs. Consecutive slices are
grouped into *cases* (slabs of ``slices_per_case`` slices, ``case_00``, ``case_01``, ...), and every case is
assigned to one of three virtual *devices* that render intensities differently (a fixed, seeded acquisition
change applied once: identity, a gamma contrast change, a smooth bias field with noise), so forgetting a case
or a device removes whole slabs. The image is kept in ``[0, 1]``.

Example::

    datalist = build_tissue_slice_datalist("/tmp/tissue")         # [{"image", "label", "case", "device", ...}]
    train, val = split_tissue_cases(datalist)                      # whole cases held out
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "TISSUE_CLASSES",
    "TISSUE_DEVICES",
    "NILEARN_INSTALL",
    "load_mni152_tissue",
    "tissue_map",
    "build_tissue_slice_datalist",
    "split_tissue_cases",
]

TISSUE_CLASSES: tuple[str, ...] = ("background", "csf", "gm", "wm")
"""Class names in label order."""

TISSUE_DEVICES: tuple[str, ...] = ("scanner_a", "scanner_b", "scanner_c")
"""The virtual devices, assigned to cases in turn."""

NILEARN_INSTALL = "pip install nilearn"
_FORMAT_VERSION = 1


def tissue_map(gm: np.ndarray, wm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The 4-class tissue labels (0 background, 1 CSF, 2 GM, 3 WM) from GM/WM probabilities and a brain mask.

    Args:
        gm: grey-matter probability map.
        wm: white-matter probability map, same shape.
        mask: brain mask (non-zero inside), same shape.

    Returns:
        a ``uint8`` label map of the same shape.

    Raises:
        ValueError: when the shapes differ.
    """
    if not gm.shape == wm.shape == mask.shape:
        raise ValueError(f"GM {gm.shape}, WM {wm.shape} and mask {mask.shape} must have the same shape.")
    gm = np.clip(gm, 0, 1)
    wm = np.clip(wm, 0, 1)
    csf = np.clip(1.0 - gm - wm, 0, 1)
    labels = (np.stack([csf, gm, wm]).argmax(0) + 1).astype(np.uint8)
    labels[np.asarray(mask) <= 0] = 0
    return labels


def load_mni152_tissue(resolution: int = 2) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """The MNI152 T1 template and its 4-class tissue map, from nilearn's packaged files (no download).

    Args:
        resolution: 1 or 2 mm.

    Returns:
        ``(image, labels, voxel_size)``: the T1 in ``[0, 1]`` (float32), the tissue map (uint8), voxel size.

    Raises:
        ImportError: naming the install command when nilearn is missing.
    """
    try:
        from nilearn import datasets
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(f"the MNI152 tissue data needs nilearn: `{NILEARN_INSTALL}`.") from error
    template = datasets.load_mni152_template(resolution=resolution)
    image = np.asarray(template.dataobj, dtype=np.float32)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=resolution).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=resolution).dataobj, dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=resolution).dataobj)
    image = (image - image.min()) / max(float(image.max() - image.min()), 1e-8)
    return image, tissue_map(gm, wm, mask), tuple(float(z) for z in template.header.get_zooms()[:3])


def _square_resize(array: np.ndarray, size: int, mode: str) -> np.ndarray:
    h, w = array.shape
    side = max(h, w)
    padded = np.zeros((side, side), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    padded[top : top + h, left : left + w] = array
    tensor = torch.from_numpy(padded)[None, None]
    if mode == "nearest":
        out = F.interpolate(tensor, size=(size, size), mode="nearest")
    else:
        out = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def _device_rendering(image: np.ndarray, device_index: int, rng: np.random.Generator) -> np.ndarray:
    """A fixed acquisition change per virtual device: identity, gamma contrast, or bias field with noise."""
    if device_index == 1:
        return np.clip(image, 0, 1) ** 1.6
    if device_index == 2:
        h, w = image.shape
        yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
        bias = 1.0 + 0.25 * xx - 0.15 * yy
        noisy = image * bias + rng.normal(0.0, 0.02, image.shape) * (image > 0)
        return np.clip(noisy, 0, 1)
    return image


def build_tissue_slice_datalist(
    root: str,
    image_size: int = 64,
    slices_per_case: int = 5,
    min_brain_fraction: float = 0.08,
    resolution: int = 2,
    seed: int = 0,
    overwrite: bool = False,
) -> list[dict]:
    """Write the 2D tissue-segmentation slices under ``root`` (once) and return their datalist.

    Axial slices whose brain mask covers at least ``min_brain_fraction`` of the slice are kept; files are reused
    when ``root/datalist.json`` was written with the same parameters.

    Args:
        root: output folder (``images/``, ``labels/`` and ``datalist.json`` are written there).
        image_size: side of the square slices.
        slices_per_case: consecutive slices per case.
        min_brain_fraction: minimum fraction of brain voxels for a slice to be kept.
        resolution: MNI152 resolution in mm (1 or 2).
        seed: seed of the noise of the third device.
        overwrite: rebuild even when a matching datalist exists.

    Returns:
        a list of ``{"image", "label", "case", "device", "slice"}`` dicts, paths absolute, in slice order.

    Raises:
        ValueError: for a non-positive ``image_size`` or ``slices_per_case``.
    """
    if image_size < 8 or slices_per_case < 1:
        raise ValueError(f"image_size must be at least 8 and slices_per_case at least 1, got {image_size}, {slices_per_case}.")
    params = {"image_size": image_size, "slices_per_case": slices_per_case, "min_brain_fraction": min_brain_fraction,
              "resolution": resolution, "seed": seed, "format": _FORMAT_VERSION}
    root = os.path.abspath(root)
    index_path = os.path.join(root, "datalist.json")
    if not overwrite and os.path.isfile(index_path):
        with open(index_path) as f:
            stored = json.load(f)
        if stored.get("params") == params and all(os.path.isfile(it["image"]) and os.path.isfile(it["label"])
                                                  for it in stored["items"]):
            return stored["items"]
    image, labels, _ = load_mni152_tissue(resolution)
    keep = [z for z in range(labels.shape[2]) if (labels[:, :, z] > 0).mean() >= min_brain_fraction]
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    rng = np.random.default_rng(seed)
    affine = np.eye(4)
    items = []
    for n, z in enumerate(keep):
        case_index = n // slices_per_case
        device_index = case_index % len(TISSUE_DEVICES)
        case = f"case_{case_index:02d}"
        img = _square_resize(image[:, :, z], image_size, "bilinear")
        img = _device_rendering(np.clip(img, 0, 1), device_index, rng).astype(np.float32)
        lab = _square_resize(labels[:, :, z].astype(np.float32), image_size, "nearest").astype(np.uint8)
        name = f"{case}_z{z:03d}.nii.gz"
        image_path = os.path.join(root, "images", name)
        label_path = os.path.join(root, "labels", name)
        nib.save(nib.Nifti1Image(img, affine), image_path)
        nib.save(nib.Nifti1Image(lab, affine), label_path)
        items.append({"image": image_path, "label": label_path, "case": case,
                      "device": TISSUE_DEVICES[device_index], "slice": int(z)})
    with open(index_path, "w") as f:
        json.dump({"params": params, "items": items}, f, indent=1)
    return items


def split_tissue_cases(
    datalist: Sequence[Mapping], val_every: int = 5, offset: int = 2
) -> tuple[list[Mapping], list[Mapping]]:
    """Hold out whole cases: every ``val_every``-th case (starting at ``offset``) is validation data.

    Args:
        datalist: ``build_tissue_slice_datalist`` output.
        val_every: one case in this many goes to validation.
        offset: the first validation case's index.

    Returns:
        ``(train, val)`` in datalist order.

    Raises:
        ValueError: for ``val_every < 2`` or when a side would be empty.
    """
    if val_every < 2:
        raise ValueError(f"val_every must be at least 2, got {val_every}.")
    cases = sorted({str(it["case"]) for it in datalist})
    held = {c for i, c in enumerate(cases) if i % val_every == offset % val_every}
    train = [it for it in datalist if str(it["case"]) not in held]
    val = [it for it in datalist if str(it["case"]) in held]
    if not train or not val:
        raise ValueError(f"splitting {len(cases)} cases with val_every={val_every} leaves one side empty.")
    return train, val
