"""MONAI Deploy operators that load the app's input: NIfTI images with their metadata, and DICOM series (the
SDK's loader and volume operators, subclassed where SDK 4.0 falls short; see ``monai_unlearn.deploy.operators``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_unlearn.deploy.inputs import (
    FILENAME_KEY,
    NUM_SLICES_KEY,
    SERIES_AFFINE_KEY,
    SERIES_ATTRIBUTES,
    SLICE_ATTRIBUTES,
    SLICE_INDEX_KEY,
    dicom_problem,
    list_dicom_files,
)


from monai_unlearn.deploy.sdk import (
    ConditionType,
    DICOMDataLoaderOperator,
    DICOMSeriesToVolumeOperator,
    Image,
    Operator,
    OperatorSpec,
)

__all__ = ["NiftiImageLoaderOperator", "DICOMStudyLoaderOperator", "DICOMSeriesImageOperator"]

logger = logging.getLogger(__name__)


class NiftiImageLoaderOperator(Operator):
    """Emit one SDK ``Image`` per NIfTI file, read with MONAI's ``LoadImage`` so its metadata travels with it.

    Give the operator a ``CountCondition`` of ``len(files)`` so the graph stops after the last file.

    Named output:
        image: an ``Image`` whose array is the file's data and whose metadata is MONAI's (affine,
            ``original_channel_dim``, ``filename_or_obj``, ...).
    """

    def __init__(self, fragment: Any, *args: Any, files: Sequence[str | os.PathLike], **kwargs: Any) -> None:
        from monai.transforms import LoadImage

        self.files = [Path(f) for f in files]
        self.output_name = "image"
        self._next = 0
        self._loader = LoadImage(image_only=True)
        super().__init__(fragment, *args, **kwargs)  # last, as the SDK requires

    def setup(self, spec: OperatorSpec) -> None:
        spec.output(self.output_name)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        if self._next >= len(self.files):
            raise RuntimeError("no file left to load; give this operator a CountCondition of len(files).")
        path = self.files[self._next]
        self._next += 1
        data = self._loader(str(path))
        meta = dict(data.meta)
        meta[FILENAME_KEY] = str(path)
        logger.info("loaded %s, shape %s", path, tuple(data.shape))
        op_output.emit(Image(data.detach().cpu().numpy(), metadata=meta), self.output_name)


class DICOMStudyLoaderOperator(DICOMDataLoaderOperator):
    """The SDK's ``DICOMDataLoaderOperator`` that fails, naming the files, on truncated or corrupt DICOM files.

    SDK 4.0 drops a file it cannot parse with a warning (pydicom returns a truncated file's first elements without
    complaint, the SDK then misses a UID) and keeps one whose pixel data is cut short until the volume conversion
    fails: a series would silently lose a slice, or fail without naming the file. After the SDK has loaded the
    studies, every file below the folder with ``DICM`` at byte 128 is checked with :func:`dicom_problem`; any
    problem raises a ``ValueError`` listing the files. Files the SDK leaves out on purpose pass: a DICOMDIR, and an
    instance at the same position as another of its series (the SDK keeps the higher AcquisitionNumber).

    Give the operator a ``CountCondition`` of 1. Named output ``dicom_study_list`` as the SDK's.
    """

    def load_data_to_studies(self, input_path: Path) -> list:
        files = list_dicom_files(input_path)
        try:
            studies = super().load_data_to_studies(Path(input_path))
        except Exception as error:
            try:
                self.check_files(files, {})  # name the files that broke the SDK's loader, if files did
            except ValueError as named:
                raise named from error
            raise
        loaded = {}
        for study in studies:
            for series in study.get_all_series():
                for sop in series.get_sop_instances():
                    ds = sop.get_native_sop_instance()
                    loaded[os.path.realpath(str(getattr(ds, "filename", "") or ""))] = ds
        self.check_files(files, loaded)
        logger.info("loaded %d DICOM file(s) in %d stud(ies) from %s", len(loaded), len(studies), input_path)
        return studies

    @staticmethod
    def check_files(files: Sequence[Path], loaded: dict[str, Any]) -> None:
        """Raise a ``ValueError`` naming each file in ``files`` that is truncated or corrupt.

        Args:
            files: the DICOM files found.
            loaded: real path -> the dataset the SDK loaded from it; other files are read again here.
        """
        from pydicom import dcmread

        problems = []
        for path in files:
            ds = loaded.get(os.path.realpath(path))
            if ds is None:
                try:
                    ds = dcmread(path)
                except Exception as e:
                    problems.append(f"{path} ({type(e).__name__}: {e})")
                    continue
            problem = dicom_problem(ds)
            if problem:
                problems.append(f"{path} ({problem})")
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise ValueError(f"{len(problems)} DICOM file(s) cannot be used, truncated or corrupt: {shown}. Remove or "
                             "replace them and run again.")


class DICOMSeriesImageOperator(DICOMSeriesToVolumeOperator):
    """The SDK's ``DICOMSeriesToVolumeOperator`` for every selected series, one ``Image`` per tick.

    SDK 4.0 converts only the first selected series and emits its volume once. This operator converts each selected
    series (of every study; a series selected by several rules once) with the SDK's own ``convert_to_image``, one
    at a time, and emits:

    - ``spatial_dims=3``: the series volume as the SDK makes it (array ``(D, H, W)``: slices, rows, columns;
      slices in the SDK's order, ascending position along the slice normal; rescale slope / intercept applied; the
      SDK's metadata, with the RAS ``affine``), which ``MonaiBundleInferenceOperator`` turns into ``(W, H, D)``;
    - ``spatial_dims=2``: its slices, one per tick: slice ``k`` is ``volume[k].T``, shape ``(W, H)`` (columns,
      rows), which is the ``k``-th slice along the last axis of the ``(W, H, D)`` array a 3D bundle gets, and the
      orientation MONAI's DICOM readers give a single slice. Its metadata: the series attributes
      (``SERIES_ATTRIBUTES``), ``slice_index``, ``num_slices``, ``SOPInstanceUID``, ``InstanceNumber``, the slice's
      4x4 RAS ``affine``, the series' ``series_affine`` and ``original_channel_dim="no_channel"``.

    ``filename_or_obj`` is the SeriesInstanceUID. A series without pixel data (e.g. a structured report) is skipped
    with a warning; a series that is not a stack of single-frame greyscale slices (the SDK's volume is then not 3D)
    raises. The graph stops after the last image (a ``BooleanCondition`` this operator turns off).

    Named input:
        study_selected_series_list: the ``DICOMSeriesSelectorOperator`` output.
    Named output:
        image: an ``Image`` per tick.
    """

    def __init__(self, fragment: Any, *args: Any, spatial_dims: int = 3, **kwargs: Any) -> None:
        from monai.deploy.conditions import BooleanCondition

        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        self.spatial_dims = spatial_dims
        self._series: list[tuple[Any, Any]] | None = None  # (study, SelectedSeries) left to convert
        self._slices: list[Any] = []  # slice Images of the current series left to emit
        self.emitted = 0
        self._tick = BooleanCondition(fragment, enable_tick=True, name=f"{kwargs.get('name', 'dicom_series')}_tick")
        super().__init__(fragment, self._tick, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        # the input is optional so that the operator keeps ticking after it: one image per tick
        spec.input(self.input_name_series).condition(ConditionType.NONE)
        spec.output(self.output_name_image)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        if self._series is None:
            selected = op_input.receive(self.input_name_series)
            if selected is None:  # the selector has not run yet
                return
            self._series = self.unique_series(selected)
            if not self._series:
                raise ValueError("no DICOM series was selected: check the selection rules (--dicom-rules).")
        image = self._next_image()
        if image is not None:
            op_output.emit(image, self.output_name_image)
            self.emitted += 1
        if not self._series and not self._slices:
            self._tick.disable_tick()
            if not self.emitted:
                raise ValueError("none of the selected DICOM series holds image pixel data.")

    @staticmethod
    def unique_series(study_selected_series_list: Sequence[Any]) -> list[tuple[Any, Any]]:
        """(study, SelectedSeries) of every selected series, each SeriesInstanceUID once, in selection order."""
        out, seen = [], set()
        for study_selected in study_selected_series_list or ():
            for selected in study_selected.selected_series:
                uid = str(selected.series.SeriesInstanceUID)
                if uid not in seen:
                    seen.add(uid)
                    out.append((study_selected.study, selected))
        return out

    def _next_image(self) -> Any:
        while not self._slices and self._series:
            study, selected = self._series.pop(0)
            volume = self.series_volume(study, selected)
            if volume is None:
                continue
            if self.spatial_dims == 3:
                return volume
            self._slices = self.slice_images(volume, selected.series)
        return self._slices.pop(0) if self._slices else None

    def series_volume(self, study: Any, selected: Any) -> Any:
        """The SDK's ``Image`` of one series (``None`` for a series without pixel data), ``filename_or_obj`` set."""
        from monai.deploy.core.domain.dicom_series_selection import StudySelectedSeries

        series = selected.series
        uid = str(series.SeriesInstanceUID)
        datasets = [sop.get_native_sop_instance() for sop in series.get_sop_instances()]
        if not any("PixelData" in ds for ds in datasets):
            logger.warning("DICOM series %s (%s) holds no pixel data: skipped", uid, getattr(series, "Modality", "?"))
            return None
        single = StudySelectedSeries(study)
        single.add_selected_series(selected)
        try:
            image = self.convert_to_image([single])
        except Exception as error:
            raise RuntimeError(f"DICOM series {uid} cannot be converted to a volume{self._culprit(datasets)}: "
                               f"{error!r} (caused by {error.__cause__!r})") from error
        selected.image = None  # the SDK keeps the volume there too: hold only the one in flight
        data = image.asnumpy()
        if data.ndim != 3:
            raise ValueError(f"DICOM series {uid} gives a volume of shape {tuple(data.shape)}, not (slices, rows, "
                             "columns): multi-frame and colour series are not supported.")
        if self.spatial_dims == 3 and image.metadata().get("affine") is None:
            # the SDK computes the affine only for two or more slices with ImagePositionPatient / Orientation
            raise ValueError(f"DICOM series {uid} gives a volume of shape {tuple(data.shape)} without geometry "
                             "(a single slice, or no ImagePositionPatient / ImageOrientationPatient): it cannot go "
                             "to a 3D bundle.")
        image.metadata()[FILENAME_KEY] = uid
        logger.info("DICOM series %s: volume of shape %s (slices, rows, columns)", uid, tuple(data.shape))
        return image

    @staticmethod
    def _culprit(datasets: Sequence[Any]) -> str:
        """`` (file F: error)`` for the first dataset whose pixel data cannot be decoded, else ``""``."""
        for ds in datasets:
            try:
                ds.pixel_array
            except Exception as e:
                return f" (file {getattr(ds, 'filename', '?')}: {type(e).__name__}: {e})"
        return ""

    @staticmethod
    def slice_images(volume: Any, series: Any) -> list[Any]:
        """The slices of an SDK volume as 2D ``Image`` objects (see the class docstring for array and metadata)."""
        data = volume.asnumpy()
        meta = volume.metadata()
        affine = meta.get("affine")
        # the SDK leaves the affine out (None) for a single slice or slices without position / orientation
        affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
        common = {k: meta[k] for k in SERIES_ATTRIBUTES if meta.get(k) is not None}
        common.update({FILENAME_KEY: str(series.SeriesInstanceUID), NUM_SLICES_KEY: int(data.shape[0]),
                       SERIES_AFFINE_KEY: affine, "original_channel_dim": "no_channel"})
        if "space" in meta:
            common["space"] = meta["space"]
        sops = [sop.get_native_sop_instance() for sop in series.get_sop_instances()]
        images = []
        for k in range(data.shape[0]):
            slice_affine = affine.copy()
            slice_affine[:, 3] = affine @ np.array([0.0, 0.0, float(k), 1.0])
            slice_meta = {**common, SLICE_INDEX_KEY: k, "affine": slice_affine}
            if len(sops) == data.shape[0]:
                for key in SLICE_ATTRIBUTES:
                    value = sops[k].get(key)
                    if value is not None:
                        slice_meta[key] = int(value) if key == "InstanceNumber" else str(value)
            pixels = np.ascontiguousarray(data[k].T)
            slice_meta["spatial_shape"] = np.asarray(pixels.shape)
            images.append(Image(pixels, metadata=slice_meta))
        return images
