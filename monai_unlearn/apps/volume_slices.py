"""A small medical classification task built from real volumes that install offline.

Each source volume is one real acquisition (or one template built from real acquisitions) and is treated as
one *device*: forgetting a device removes every slice of that volume, which is the device-deprecation
scenario of the demo. Axial slices are taken from the informative part of each volume, scaled per slice to
``[0, 1]``, resized to a square image with the in-plane physical aspect kept (zero padding), and written as
2D NIfTI files that MONAI's ``LoadImaged`` + ``EnsureChannelFirstd`` read as ``(1, H, W)`` tensors.

Classes (anatomy and modality):

====  ============  ==========================================================================
 0    brain_mri     MNI152 (nilearn), Colin27 (mricron-data), ITK example T1, pyradiomics brain1/2
 1    head_ct       InVesalius ``Cranium.inv3`` (invesalius-examples, GPL-2: used, never copied)
 2    chest_ct      pyradiomics lung1, lung2
 3    breast_mri    pyradiomics breast1
====  ============  ==========================================================================

The pyradiomics volumes come from the data folder of the pyradiomics 3.1.0 source archive on PyPI, which
``scripts/install_data.sh`` fetches with pip and unpacks under :func:`default_pyradiomics_dir`. Nothing is
downloaded at run time.

Example::

    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
    datalist = build_volume_slice_datalist("/tmp/slices")
    train, test = split_train_test(datalist, test_fraction=0.2)
    loader = Compose([LoadImaged("image"), EnsureChannelFirstd("image")])
"""

from __future__ import annotations

import json
import os
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from monai_unlearn.apps.volume_sources import (
    INSTALL_COMMANDS,
    INVESALIUS_DIR,
    ITK_EXAMPLES_DIR,
    MRICRON_DIR,
    VOLUME_SLICE_CLASSES,
    VOLUME_SOURCES,
    VolumeSource,
    _resolve_dirs,
    _source_by_name,
    _source_path,
    default_data_dirs,
    default_pyradiomics_dir,
    load_source_volume,
    read_nrrd,
    sources_available,
)

__all__ = [
    "VOLUME_SLICE_CLASSES",
    "MRICRON_DIR",
    "ITK_EXAMPLES_DIR",
    "INVESALIUS_DIR",
    "INSTALL_COMMANDS",
    "VolumeSource",
    "VOLUME_SOURCES",
    "default_pyradiomics_dir",
    "default_data_dirs",
    "sources_available",
    "load_source_volume",
    "read_nrrd",
    "build_volume_slice_datalist",
    "split_train_test",
    "datalist_counts",
]

_DATALIST_VERSION = 1

def _informative_slices(vol: np.ndarray, min_relative_area: float = 0.3) -> np.ndarray:
    """Indices of axial slices whose foreground area is at least ``min_relative_area`` of the largest."""
    lo, hi = np.percentile(vol, (1.0, 99.0))
    if hi <= lo:
        return np.zeros(0, dtype=np.int64)
    fg = (vol - lo) / (hi - lo) > 0.1
    area = fg.reshape(-1, vol.shape[2]).mean(axis=0)
    return np.flatnonzero(area >= min_relative_area * area.max())


def _prepare_slice(
    sl: np.ndarray, spacing: tuple[float, float], image_size: int
) -> tuple[np.ndarray, tuple[float, float]]:
    """Scale a slice to [0, 1] (robust per-slice percentiles) and fit it into a square keeping its aspect."""
    lo, hi = np.percentile(sl, (0.5, 99.5))
    sl = np.clip((sl - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(sl)
    extent = (sl.shape[0] * spacing[0], sl.shape[1] * spacing[1])
    scale = image_size / max(extent)
    new_shape = [max(1, min(image_size, int(round(e * scale)))) for e in extent]
    t = torch.from_numpy(np.ascontiguousarray(sl, dtype=np.float32))[None, None]
    t = F.interpolate(t, size=new_shape, mode="bilinear", align_corners=False, antialias=True)[0, 0].clamp_(0, 1)
    out = torch.zeros(image_size, image_size)
    o0, o1 = (image_size - new_shape[0]) // 2, (image_size - new_shape[1]) // 2
    out[o0 : o0 + new_shape[0], o1 : o1 + new_shape[1]] = t
    return out.numpy(), (extent[0] / new_shape[0], extent[1] / new_shape[1])


def _select(indices: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if n >= len(indices):
        return indices
    return np.sort(rng.choice(indices, size=n, replace=False))


def _config(image_size: int, slices_per_volume: int | None, seed: int, names: Sequence[str]) -> dict:
    return {
        "version": _DATALIST_VERSION,
        "image_size": int(image_size),
        "slices_per_volume": slices_per_volume,
        "seed": int(seed),
        "sources": list(names),
    }


def _absolute(entries: list[dict], base: Path) -> list[dict]:
    return [{**e, "image": str(base / e["image"])} for e in entries]


def build_volume_slice_datalist(
    output_dir: str | os.PathLike,
    image_size: int = 64,
    slices_per_volume: int | None = None,
    seed: int = 0,
    sources: Sequence[str] | None = None,
    data_dirs: Mapping[str, str | os.PathLike] | None = None,
    overwrite: bool = False,
) -> list[dict]:
    """Write the slice images and ``datalist.json`` under ``output_dir`` and return the datalist.

    The call is idempotent: when ``output_dir/datalist.json`` was written with the same settings and all its
    images exist, it is read back and nothing is recomputed.

    Args:
        output_dir: folder for ``images/<device>/*.nii.gz`` and ``datalist.json``.
        image_size: side of the square output slices.
        slices_per_volume: the most slices to take from each volume; ``None`` uses each source's
            ``default_slices`` (about 320 slices in all). Slices come only from the informative part of the
            volume (at least 30% of the largest foreground area), chosen at random with ``seed``.
        seed: seed of the slice selection.
        sources: device names to use (see :data:`VOLUME_SOURCES`); ``None`` uses all of them.
        data_dirs: optional overrides of :func:`default_data_dirs` (keys ``mricron``, ``itk_examples``,
            ``invesalius``, ``pyradiomics``).
        overwrite: rebuild even when a matching datalist exists.

    Returns:
        a list of ``{"image": absolute path, "label": int, "class_name": str, "device": str, "source": str,
        "slice": int}``, in source order then slice order.

    Raises:
        FileNotFoundError: when a requested source is missing; the message lists each missing source with the
            command that installs it.
        ValueError: for unknown source names or bad sizes.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}.")
    if slices_per_volume is not None and slices_per_volume < 1:
        raise ValueError(f"slices_per_volume must be positive or None, got {slices_per_volume}.")
    chosen = [s.name for s in VOLUME_SOURCES] if sources is None else list(dict.fromkeys(sources))
    selected = [_source_by_name(n) for n in chosen]
    out = Path(output_dir)
    config = _config(image_size, slices_per_volume, seed, chosen)
    index = out / "datalist.json"
    if index.is_file() and not overwrite:
        try:
            stored = json.loads(index.read_text())
        except (json.JSONDecodeError, OSError):
            stored = {}
        if stored.get("config") == config:
            entries = _absolute(stored.get("data", []), out)
            if entries and all(os.path.isfile(e["image"]) for e in entries):
                return entries

    avail = sources_available(data_dirs)
    missing = [s for s in selected if not avail[s.name]["available"]]
    if missing:
        lines = [
            f"  - {s.name} ({s.class_name}) at {avail[s.name]['path']}: {INSTALL_COMMANDS[s.group]}" for s in missing
        ]
        raise FileNotFoundError(
            "volume slice sources are missing:\n" + "\n".join(lines) + "\nInstall them (or run "
            "scripts/install_data.sh as root), or pass `sources=` naming only the available ones."
        )

    dirs = _resolve_dirs(data_dirs)
    entries: list[dict] = []
    for src_index, src in enumerate(selected):
        vol, spacing = load_source_volume(src, data_dirs)
        rng = np.random.default_rng([seed, src_index, zlib.crc32(src.name.encode())])
        n = src.default_slices if slices_per_volume is None else slices_per_volume
        picks = _select(_informative_slices(vol), n, rng)
        folder = out / "images" / src.name
        folder.mkdir(parents=True, exist_ok=True)
        for k in picks:
            img, pix = _prepare_slice(vol[:, :, int(k)], spacing[:2], image_size)
            rel = Path("images") / src.name / f"{src.name}_z{int(k):03d}.nii.gz"
            nib.save(nib.Nifti1Image(img.astype(np.float32), np.diag([pix[0], pix[1], spacing[2], 1.0])), out / rel)
            entries.append(
                {
                    "image": rel.as_posix(),
                    "label": src.label,
                    "class_name": src.class_name,
                    "device": src.name,
                    "source": f"{src.group}:{_source_path(src, dirs)}",
                    "slice": int(k),
                }
            )
    tmp = index.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"config": config, "classes": list(VOLUME_SLICE_CLASSES), "data": entries}, indent=1))
    os.replace(tmp, index)
    return _absolute(entries, out)


def split_train_test(
    datalist: Sequence[dict], test_fraction: float = 0.2, seed: int = 0, device_key: str = "device"
) -> tuple[list[dict], list[dict]]:
    """Split a datalist into train and test by slice within each device.

    Every device keeps most of its slices in train and gives ``test_fraction`` of them (at least one, when it
    has two or more) to test, so the test set is held-out data from the same devices. The choice depends only
    on ``seed``, the device name and the device's slices, not on the order of the list.

    Args:
        datalist: entries with a ``device_key`` (and ideally a ``slice``) field.
        test_fraction: fraction of each device's entries held out, in ``[0, 1)``.
        seed: seed of the selection.
        device_key: the key that names the device.

    Returns:
        ``(train, test)`` lists, each in the order of ``datalist``.

    Raises:
        ValueError: when ``test_fraction`` is outside ``[0, 1)``.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    by_device: dict[str, list[int]] = {}
    for i, entry in enumerate(datalist):
        by_device.setdefault(str(entry[device_key]), []).append(i)
    test_ids: set[int] = set()
    for device, ids in by_device.items():
        ids = sorted(ids, key=lambda i: (datalist[i].get("slice", 0), str(datalist[i].get("image", ""))))
        n_test = int(round(test_fraction * len(ids)))
        if test_fraction > 0 and len(ids) > 1:
            n_test = min(max(n_test, 1), len(ids) - 1)
        rng = np.random.default_rng([seed, zlib.crc32(device.encode())])
        test_ids.update(ids[j] for j in rng.permutation(len(ids))[:n_test])
    train = [e for i, e in enumerate(datalist) if i not in test_ids]
    test = [e for i, e in enumerate(datalist) if i in test_ids]
    return train, test


def datalist_counts(datalist: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Count entries per class and per device.

    Args:
        datalist: entries with ``class_name`` and ``device`` fields.

    Returns:
        ``{"class": {class_name: n}, "device": {device: n}}``.
    """
    return {
        "class": dict(Counter(e["class_name"] for e in datalist)),
        "device": dict(Counter(e["device"] for e in datalist)),
    }
