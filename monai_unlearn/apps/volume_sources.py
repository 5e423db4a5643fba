"""The real volumes behind the volume-slice task: where each is installed, how to read it, what it shows.

Each source volume is one real acquisition (or one template built from real acquisitions) and is one *device* of
the task in ``monai_unlearn.apps.volume_slices``. Nothing is downloaded at run time: a missing source names its
install command (``INSTALL_COMMANDS``).
"""

from __future__ import annotations

import os
import plistlib
import re
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

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
]

VOLUME_SLICE_CLASSES: tuple[str, ...] = ("brain_mri", "head_ct", "chest_ct", "breast_mri")
"""Class names in label order."""

MRICRON_DIR = "/usr/share/mricron/templates"
ITK_EXAMPLES_DIR = "/usr/share/doc/insighttoolkit5-examples/examples/Data"
INVESALIUS_DIR = "/usr/share/doc/invesalius-examples/examples"

INSTALL_COMMANDS: dict[str, str] = {
    "nilearn": "pip install nilearn",
    "mricron": "sudo apt-get update && sudo apt-get install -y mricron-data",
    "itk_examples": "sudo apt-get update && sudo apt-get install -y insighttoolkit5-examples",
    "invesalius": "sudo apt-get update && sudo apt-get install -y invesalius-examples",
    "pyradiomics": (
        "bash scripts/install_data.sh (it pip-downloads the pyradiomics 3.1.0 source archive and unpacks "
        "its data/*.nrrd into $MONAI_UNLEARN_DATA/pyradiomics-3.1.0/data, default ~/.cache/monai_unlearn)"
    ),
}
"""How to install each data group (the key is ``VolumeSource.group``)."""



@dataclass(frozen=True)
class VolumeSource:
    """One real volume used as one device.

    Attributes:
        name: device name, also the datalist's ``device`` value.
        class_name: one of :data:`VOLUME_SLICE_CLASSES`.
        group: the data group (key of :data:`INSTALL_COMMANDS`) that provides the file.
        filename: file name inside the group's folder (empty for nilearn's packaged template).
        default_slices: slices taken when ``slices_per_volume`` is ``None``.
        description: a short human description.
    """

    name: str
    class_name: str
    group: str
    filename: str
    default_slices: int
    description: str

    @property
    def label(self) -> int:
        """The integer class label."""
        return VOLUME_SLICE_CLASSES.index(self.class_name)


VOLUME_SOURCES: tuple[VolumeSource, ...] = (
    VolumeSource("mni152", "brain_mri", "nilearn", "", 24, "MNI152 T1 template, 1 mm (nilearn)"),
    VolumeSource("colin27", "brain_mri", "mricron", "ch2.nii.gz", 24, "Colin27 single-subject T1 (mricron-data)"),
    VolumeSource(
        "itk_kmeans_t1", "brain_mri", "itk_examples", "KmeansTest_T1UCharRaw.nii.gz", 24, "ITK example brain T1"
    ),
    VolumeSource("pyradiomics_brain1", "brain_mri", "pyradiomics", "brain1_image.nrrd", 20, "brain MRI case 1"),
    VolumeSource("pyradiomics_brain2", "brain_mri", "pyradiomics", "brain2_image.nrrd", 20, "brain MRI case 2"),
    VolumeSource("invesalius_cranium", "head_ct", "invesalius", "Cranium.inv3", 90, "head CT (InVesalius example)"),
    VolumeSource("pyradiomics_lung1", "chest_ct", "pyradiomics", "lung1_image.nrrd", 45, "chest CT case 1"),
    VolumeSource("pyradiomics_lung2", "chest_ct", "pyradiomics", "lung2_image.nrrd", 45, "chest CT case 2"),
    VolumeSource("pyradiomics_breast1", "breast_mri", "pyradiomics", "breast1_image.nrrd", 21, "breast MRI case 1"),
)
"""Every known source, one device each."""


def default_pyradiomics_dir() -> str:
    """The folder holding the pyradiomics ``*_image.nrrd`` files.

    ``$MONAI_UNLEARN_PYRADIOMICS_DIR`` when set, else ``$MONAI_UNLEARN_DATA/pyradiomics-3.1.0/data`` with
    ``MONAI_UNLEARN_DATA`` defaulting to ``~/.cache/monai_unlearn`` (where ``scripts/install_data.sh`` writes).

    Returns:
        the folder path (it may not exist).
    """
    explicit = os.environ.get("MONAI_UNLEARN_PYRADIOMICS_DIR")
    if explicit:
        return explicit
    root = os.environ.get("MONAI_UNLEARN_DATA", os.path.join(os.path.expanduser("~"), ".cache", "monai_unlearn"))
    return os.path.join(root, "pyradiomics-3.1.0", "data")


def default_data_dirs() -> dict[str, str]:
    """The default folder of each file-based data group.

    Returns:
        a mapping from group name to folder.
    """
    return {
        "mricron": MRICRON_DIR,
        "itk_examples": ITK_EXAMPLES_DIR,
        "invesalius": INVESALIUS_DIR,
        "pyradiomics": default_pyradiomics_dir(),
    }


def _resolve_dirs(data_dirs: Mapping[str, str | os.PathLike] | None) -> dict[str, str]:
    dirs = default_data_dirs()
    for key, value in (data_dirs or {}).items():
        if key not in dirs:
            raise ValueError(f"unknown data group {key!r}; known groups: {sorted(dirs)}.")
        dirs[key] = os.fspath(value)
    return dirs


def _source_path(source: VolumeSource, dirs: Mapping[str, str]) -> str:
    if source.group == "nilearn":
        return "nilearn.datasets.load_mni152_template(resolution=1)"
    return os.path.join(dirs[source.group], source.filename)


def _nilearn_available() -> bool:
    try:
        import nilearn.datasets  # noqa: F401
    except ImportError:
        return False
    return True


def sources_available(data_dirs: Mapping[str, str | os.PathLike] | None = None) -> dict[str, dict]:
    """Report which sources are present and how to install the missing ones.

    Args:
        data_dirs: optional overrides of :func:`default_data_dirs` (keys ``mricron``, ``itk_examples``,
            ``invesalius``, ``pyradiomics``).

    Returns:
        a mapping from device name to ``{"available": bool, "class_name": str, "group": str, "path": str,
        "install": str}``.
    """
    dirs = _resolve_dirs(data_dirs)
    report = {}
    for src in VOLUME_SOURCES:
        path = _source_path(src, dirs)
        ok = _nilearn_available() if src.group == "nilearn" else os.path.isfile(path)
        report[src.name] = {
            "available": ok,
            "class_name": src.class_name,
            "group": src.group,
            "path": path,
            "install": INSTALL_COMMANDS[src.group],
        }
    return report


# ---------------------------------------------------------------------------------------------- readers
_NRRD_TYPES = {
    "short": "i2", "int16": "i2", "signed short": "i2", "ushort": "u2", "uint16": "u2", "unsigned short": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4", "float": "f4", "double": "f8",
    "uchar": "u1", "uint8": "u1", "unsigned char": "u1", "char": "i1", "int8": "i1", "signed char": "i1",
}


def read_nrrd(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a single-file 3D NRRD volume (raw or gzip encoding) as used by the pyradiomics test data.

    Args:
        path: the ``.nrrd`` file.

    Returns:
        ``(array, affine)``: the array indexed ``[i, j, k]`` and a 4x4 voxel-to-RAS affine.

    Raises:
        ValueError: for an unsupported or inconsistent file.
    """
    raw = Path(path).read_bytes()
    if not raw.startswith(b"NRRD"):
        raise ValueError(f"{path} is not an NRRD file.")
    sep = raw.find(b"\n\n")
    if sep < 0:
        raise ValueError(f"{path}: NRRD header has no end.")
    fields = {}
    for line in raw[:sep].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.lstrip("=").strip()
    if "data file" in fields or "datafile" in fields:
        raise ValueError(f"{path}: detached NRRD data files are not supported.")
    dtype = np.dtype(_NRRD_TYPES[fields["type"].lower()])
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder("<" if fields.get("endian", "little") == "little" else ">")
    sizes = [int(v) for v in fields["sizes"].split()]
    payload = raw[sep + 2 :]
    encoding = fields.get("encoding", "raw").lower()
    if encoding in ("gzip", "gz"):
        payload = zlib.decompress(payload, 15 + 32)
    elif encoding != "raw":
        raise ValueError(f"{path}: NRRD encoding {encoding!r} is not supported.")
    n = int(np.prod(sizes))
    if len(payload) < n * dtype.itemsize:
        raise ValueError(f"{path}: NRRD payload is truncated.")
    arr = np.frombuffer(payload[: n * dtype.itemsize], dtype=dtype).reshape(sizes[::-1]).T  # fastest axis first
    directions = re.findall(r"\(([^)]*)\)", fields.get("space directions", ""))
    affine = np.eye(4)
    if len(directions) == 3:
        for axis, vec in enumerate(directions):
            affine[:3, axis] = [float(v) for v in vec.split(",")]
    origin = re.findall(r"\(([^)]*)\)", fields.get("space origin", ""))
    if origin:
        affine[:3, 3] = [float(v) for v in origin[0].split(",")]
    space = fields.get("space", "left-posterior-superior").lower()
    if space in ("left-posterior-superior", "lps"):
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    return np.ascontiguousarray(arr), affine


def _read_inv3(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read the CT matrix of an InVesalius project (a tar.gz with ``main.plist`` and ``matrix.dat``)."""
    with tarfile.open(path, "r:gz") as tar:
        members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
        main = plistlib.load(tar.extractfile(members["main.plist"]))
        info = main["matrix"]
        data = tar.extractfile(members[os.path.basename(info["filename"])]).read()
    shape = tuple(int(s) for s in info["shape"])  # (z, y, x)
    arr = np.frombuffer(data, dtype=np.dtype(info["dtype"])).reshape(shape)
    sx, sy, sz = (float(s) for s in main["spacing"])
    return np.ascontiguousarray(arr.transpose(2, 1, 0)), np.diag([sx, sy, sz, 1.0])


def load_source_volume(
    source: VolumeSource | str, data_dirs: Mapping[str, str | os.PathLike] | None = None
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Load one source as a float32 volume in closest-canonical (RAS) orientation.

    The last axis runs inferior to superior, so ``volume[:, :, k]`` is an axial slice.

    Args:
        source: a :class:`VolumeSource` or its name.
        data_dirs: optional overrides of :func:`default_data_dirs`.

    Returns:
        ``(volume, spacing)`` with the voxel spacing in mm.

    Raises:
        FileNotFoundError: when the source is not installed; the message gives the install command.
    """
    if isinstance(source, str):
        source = _source_by_name(source)
    dirs = _resolve_dirs(data_dirs)
    path = _source_path(source, dirs)
    if source.group == "nilearn":
        if not _nilearn_available():
            raise FileNotFoundError(f"source {source.name!r} needs nilearn: `{INSTALL_COMMANDS['nilearn']}`.")
        from nilearn.datasets import load_mni152_template

        img = load_mni152_template(resolution=1)
    elif not os.path.isfile(path):
        raise FileNotFoundError(
            f"source {source.name!r} ({source.description}) not found at {path}. "
            f"Install it with `{INSTALL_COMMANDS[source.group]}`."
        )
    elif path.endswith(".nrrd"):
        arr, affine = read_nrrd(path)
        img = nib.Nifti1Image(arr, affine)
    elif path.endswith(".inv3"):
        arr, affine = _read_inv3(path)
        img = nib.Nifti1Image(arr, affine)
    else:
        img = nib.load(path)
    img = nib.as_closest_canonical(img)
    vol = np.asarray(img.get_fdata(dtype=np.float32))
    while vol.ndim > 3:
        vol = vol[..., 0]
    spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
    return vol, spacing  # type: ignore[return-value]


def _source_by_name(name: str) -> VolumeSource:
    for src in VOLUME_SOURCES:
        if src.name == name:
            return src
    raise ValueError(f"unknown source {name!r}; known sources: {[s.name for s in VOLUME_SOURCES]}.")


# ---------------------------------------------------------------------------------------------- slicing
