"""The deploy app's inputs: finding NIfTI files (by suffix) and DICOM files (by magic), what makes a DICOM file
unusable, and the metadata keys the loaded images carry."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

__all__ = [
    "NIFTI_SUFFIXES",
    "INPUT_FORMATS",
    "list_nifti_files",
    "is_dicom_file",
    "list_dicom_files",
    "detect_input_format",
    "dicom_problem",
    "series_file_name",
    "PREDICTIONS_FILE",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
INPUT_FORMATS = ("auto", "nifti", "dicom")
DICOM_MAGIC, DICOM_MAGIC_OFFSET = b"DICM", 128
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage: no image, the SDK ignores it
REQUIRED_DICOM_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
PREDICTIONS_FILE = "predictions.json"
FILENAME_KEY = "filename_or_obj"
# metadata keys of DICOM-derived images: the series (as the SDK names its attributes) and, for 2D bundles, the slice
SERIES_UID_KEY = "SeriesInstanceUID"
SERIES_ATTRIBUTES = ("StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "Modality", "SeriesDescription")
SLICE_INDEX_KEY, NUM_SLICES_KEY, SERIES_AFFINE_KEY = "slice_index", "num_slices", "series_affine"
SLICE_ATTRIBUTES = ("SOPInstanceUID", "InstanceNumber")


def _files_at(path: Path) -> list[Path]:
    """The file itself, or every file below the folder, sorted."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    raise FileNotFoundError(f"input path {path} does not exist.")


def list_nifti_files(path: str | os.PathLike) -> list[Path]:
    """The NIfTI files at ``path``: the file itself, or every ``.nii`` / ``.nii.gz`` below the folder, sorted.

    Raises:
        FileNotFoundError: when ``path`` does not exist or holds no NIfTI file.
    """
    path = Path(path)
    files = [p for p in _files_at(path) if str(p).endswith(NIFTI_SUFFIXES)]
    if not files:
        raise FileNotFoundError(f"no NIfTI file ({', '.join(NIFTI_SUFFIXES)}) at {path}.")
    return files


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether the file at ``path`` is a DICOM Part 10 file: ``DICM`` at byte offset 128."""
    try:
        with open(path, "rb") as f:
            head = f.read(DICOM_MAGIC_OFFSET + len(DICOM_MAGIC))
    except OSError:
        return False
    return head[DICOM_MAGIC_OFFSET:] == DICOM_MAGIC


def list_dicom_files(path: str | os.PathLike) -> list[Path]:
    """The DICOM files (``DICM`` at byte 128) at ``path``: the file itself, or every one below the folder, sorted.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
    """
    return [p for p in _files_at(Path(path)) if not str(p).endswith(NIFTI_SUFFIXES) and is_dicom_file(p)]


def detect_input_format(path: str | os.PathLike, input_format: str = "auto") -> str:
    """``"nifti"`` or ``"dicom"``: what the app reads at ``path``.

    ``"auto"`` looks at the content: NIfTI by the ``.nii`` / ``.nii.gz`` suffix, DICOM by ``DICM`` at byte 128,
    in ``path`` and its subfolders. DICOM input must be a folder (the SDK's loader reads folders).

    Raises:
        FileNotFoundError: when ``path`` does not exist or holds no image of the format asked for (or of either
            format, for ``"auto"``).
        ValueError: for an unknown ``input_format``, a folder holding both formats under ``"auto"``, or a single
            DICOM file.
    """
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input format {input_format!r} is not one of {', '.join(INPUT_FORMATS)}.")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input path {path} does not exist.")
    if input_format == "nifti":
        list_nifti_files(path)  # raises when there is none
        return "nifti"
    dicom = list_dicom_files(path)
    if input_format == "auto":
        nifti = [path] if path.is_file() and str(path).endswith(NIFTI_SUFFIXES) else []
        if path.is_dir():
            nifti = [p for p in path.rglob("*") if p.is_file() and str(p).endswith(NIFTI_SUFFIXES)]
        if nifti and dicom:
            raise ValueError(f"{path} holds both NIfTI ({len(nifti)}) and DICOM ({len(dicom)}) files: choose one with "
                             "--input-format nifti or --input-format dicom.")
        if nifti:
            return "nifti"
        if not dicom:
            raise FileNotFoundError(
                f"no NIfTI file ({', '.join(NIFTI_SUFFIXES)}) and no DICOM file ('DICM' at byte "
                f"{DICOM_MAGIC_OFFSET}) in {path}" + (" or its subfolders." if path.is_dir() else "."))
    if not dicom:
        raise FileNotFoundError(f"no DICOM file ('DICM' at byte {DICOM_MAGIC_OFFSET}) in {path}"
                                + (" or its subfolders." if path.is_dir() else "."))
    if path.is_file():
        raise ValueError(f"{path} is a single DICOM file: give the folder that holds its series (the SDK's "
                         "DICOMDataLoaderOperator reads folders).")
    return "dicom"


def dicom_problem(ds: Any) -> str | None:
    """Why a DICOM dataset read by pydicom cannot be used (a truncated or corrupt file), or ``None``.

    pydicom reads a truncated file without complaint and returns what it got, so this checks what the SDK needs:
    the study, series and instance UIDs, and for an image (an ``* Image Storage`` SOP class, or ``Rows`` /
    ``PixelData`` present) pixel data of the full length (uncompressed transfer syntaxes; compressed pixel data is
    checked when it is decoded). A DICOMDIR is not an image and is accepted.
    """
    from pydicom.uid import UID

    file_meta = getattr(ds, "file_meta", None)
    sop_class = ds.get("SOPClassUID") or (file_meta.get("MediaStorageSOPClassUID") if file_meta is not None else None)
    if str(sop_class or "") == DICOMDIR_SOP_CLASS:
        return None
    missing = [k for k in REQUIRED_DICOM_UIDS if k not in ds]
    if missing:
        return f"{', '.join(missing)} missing"
    if "Image Storage" not in UID(str(sop_class)).name and "PixelData" not in ds and "Rows" not in ds:
        return None  # not an image (e.g. a structured report): the selector or the volume operator deals with it
    if "PixelData" not in ds:
        return "no pixel data"
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if syntax is None:
        return "no transfer syntax in the file meta information"
    if not UID(str(syntax)).is_encapsulated:
        from pydicom.pixels.utils import get_expected_length

        try:
            expected = get_expected_length(ds, unit="bytes")
        except Exception as e:  # a missing Rows / Columns / BitsAllocated ...
            return f"incomplete pixel description ({e})"
        if len(ds.PixelData) < expected:
            return f"pixel data holds {len(ds.PixelData)} of {expected} bytes"
    return None


def series_file_name(series_uid: str) -> str:
    """A file name stem for a series: its SeriesInstanceUID with characters other than ``[0-9A-Za-z._-]`` as ``_``."""
    name = re.sub(r"[^0-9A-Za-z._-]", "_", str(series_uid)).strip(".")
    return name or "series"
