"""Synthetic DICOM series for the deploy tests, written with pydicom: single-frame CT Image Storage files with the
geometry and rescale attributes the MONAI Deploy App SDK's DICOM operators read."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

SLOPE, INTERCEPT = 0.0005, -0.25  # stored value v means v * SLOPE + INTERCEPT, as RescaleSlope / RescaleIntercept


def stored_values(image: np.ndarray, slope: float = SLOPE, intercept: float = INTERCEPT) -> np.ndarray:
    """The uint16 values to store so that ``stored * slope + intercept`` is ``image`` to within ``slope / 2``."""
    stored = np.round((np.asarray(image, dtype=np.float64) - intercept) / slope)
    if stored.min() < 0 or stored.max() > np.iinfo(np.uint16).max:
        raise ValueError("the image does not fit uint16 with this slope and intercept")
    return stored.astype(np.uint16)


def rescaled(stored: np.ndarray, slope: float = SLOPE, intercept: float = INTERCEPT) -> np.ndarray:
    """What the SDK makes of stored values: pydicom's ``apply_rescale`` (float64 ``stored * slope + intercept``)."""
    return stored.astype(np.float64) * slope + intercept


def write_ct_series(
    folder: str,
    pixel_arrays: Sequence[np.ndarray],
    z_positions: Sequence[float],
    origin: tuple[float, float] = (0.0, 0.0),
    pixel_spacing: float = 1.0,
    slope: float = SLOPE,
    intercept: float = INTERCEPT,
    series_uid: str | None = None,
    study_uid: str | None = None,
    description: str = "synthetic",
) -> list[dict]:
    """Write one CT series, one file per slice, into ``folder``.

    Args:
        pixel_arrays: the image of each slice as pydicom's ``pixel_array`` will read it after rescaling:
            ``(rows, columns)``; they are stored as uint16 with ``slope`` / ``intercept``.
        z_positions: ImagePositionPatient z of each slice (axial slices, ImageOrientationPatient 1\\0\\0\\0\\1\\0).
        origin: ImagePositionPatient x and y.
        pixel_spacing: PixelSpacing, the same along rows and columns.

    Returns:
        per slice, in the order given: ``path``, ``sop_uid``, ``instance_number``, ``z`` and ``stored`` (the stored
        uint16 array, ``(rows, columns)``).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    os.makedirs(folder, exist_ok=True)
    series_uid, study_uid = series_uid or generate_uid(), study_uid or generate_uid()
    written = []
    for k, (image, z) in enumerate(zip(pixel_arrays, z_positions)):
        stored = stored_values(image, slope, intercept)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientName, ds.PatientID = "Synthetic^Series", "synthetic"
        ds.StudyDescription, ds.SeriesDescription = "monai_unlearn deploy test", description
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.PatientPosition = "HFS"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(z)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [float(pixel_spacing), float(pixel_spacing)]
        ds.SliceThickness = 1.0
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "US"
        ds.PixelData = stored.tobytes()
        path = os.path.join(folder, f"IM{k:04d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        written.append({"path": path, "sop_uid": str(ds.SOPInstanceUID), "instance_number": k + 1, "z": float(z),
                        "stored": stored})
    return written


def truncate(path: str, keep: int | None = None, drop: int | None = None) -> None:
    """Cut the file at ``path``: keep its first ``keep`` bytes, or drop its last ``drop`` bytes."""
    with open(path, "rb") as f:
        data = f.read()
    data = data[:keep] if keep is not None else data[: len(data) - int(drop or 0)]
    with open(path, "wb") as f:
        f.write(data)
