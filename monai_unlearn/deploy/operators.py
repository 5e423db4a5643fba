"""MONAI Deploy operators for running an unlearned bundle: load NIfTI files or DICOM series, infer with the bundle,
write results.

The App SDK is imported through ``monai.utils.optional_import``: without it this module still imports (the
classes then fail on construction with a message naming the missing package).

Why ``MonaiBundleInferenceOperator`` is subclassed rather than used as it is (App SDK 4.0):

- its ``_send_output`` for outputs of type ``"probabilities"`` maps every probability (cast to ``int``) to a class
  name instead of taking the argmax, and any output other than an ``Image`` drops the input's metadata, so a
  writer could not tell which file a prediction belongs to. :class:`BundleInferenceOperator` overrides only that
  method: it emits the post-processed prediction with the input's metadata.
- it reads ``network_data_format.inputs.<name>.type`` without a default; bundles that leave it out (the Model Zoo
  templates do) get ``"image"``.

Input is fed as SDK ``Image`` objects loaded by MONAI's own ``LoadImage`` with their metadata
(:class:`NiftiImageLoaderOperator`), not as the bare arrays of the SDK's ``NiftiDataLoader``: the bundle operator
rejects 2D arrays (it accepts rank 3 or 4 only), and without the metadata ``EnsureChannelFirstd`` in the bundle's
preprocessing cannot tell a channel from a spatial axis. The bundle operator removes ``LoadImage*`` from the
preprocessing, so the rest of the bundle's preprocessing, its inferer and its postprocessing run unchanged.

DICOM series are read by the SDK's own ``DICOMDataLoaderOperator`` -> ``DICOMSeriesSelectorOperator`` ->
``DICOMSeriesToVolumeOperator``, each subclassed only where SDK 4.0 falls short: the loader
(:class:`DICOMStudyLoaderOperator`) fails on a truncated or corrupt file that the SDK would silently drop, and the
volume operator (:class:`DICOMSeriesImageOperator`) converts every selected series, not just the first, and emits
one ``Image`` per tick: the series volume for a 3D bundle, or its slices one by one for a 2D bundle.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import optional_import

from monai_unlearn.io import atomic_write_json

Operator, _ = optional_import("monai.deploy.core", name="Operator", as_type="base")
Image, _ = optional_import("monai.deploy.core", name="Image")
OperatorSpec, _ = optional_import("monai.deploy.core", name="OperatorSpec")
ConditionType, _ = optional_import("monai.deploy.core", name="ConditionType")
MonaiBundleInferenceOperator, _ = optional_import(
    "monai.deploy.operators.monai_bundle_inference_operator", name="MonaiBundleInferenceOperator", as_type="base"
)
DICOMDataLoaderOperator, _ = optional_import(
    "monai.deploy.operators.dicom_data_loader_operator", name="DICOMDataLoaderOperator", as_type="base"
)
DICOMSeriesToVolumeOperator, _ = optional_import(
    "monai.deploy.operators.dicom_series_to_volume_operator", name="DICOMSeriesToVolumeOperator", as_type="base"
)

__all__ = [
    "NIFTI_SUFFIXES",
    "INPUT_FORMATS",
    "list_nifti_files",
    "is_dicom_file",
    "list_dicom_files",
    "detect_input_format",
    "dicom_problem",
    "series_file_name",
    "NiftiImageLoaderOperator",
    "DICOMStudyLoaderOperator",
    "DICOMSeriesImageOperator",
    "BundleInferenceOperator",
    "PredictionWriterOperator",
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
logger = logging.getLogger(__name__)


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


def _applies_activation(compose: Any) -> bool:
    """Whether a (filtered) postprocessing ``Compose`` turns logits into probabilities."""
    for t in getattr(compose, "transforms", ()):
        if type(t).__name__ in ("Activations", "Activationsd"):
            inner = getattr(t, "activations", t)  # Activationsd wraps an Activations
            for attr in ("softmax", "sigmoid"):
                flags = getattr(inner, attr, False)
                if any(flags) if isinstance(flags, Sequence) else bool(flags):
                    return True
            if getattr(inner, "other", None) is not None:
                return True
    return False


class BundleInferenceOperator(MonaiBundleInferenceOperator):
    """``MonaiBundleInferenceOperator`` whose outputs keep the input's metadata (see the module docstring).

    Each output port receives a dict: ``pred`` (the post-processed prediction of one input, a numpy array without
    batch dimension), ``meta`` (the input's metadata, including ``filename_or_obj``), ``activated`` (whether the
    bundle's postprocessing applied softmax / sigmoid), ``channel_def`` and ``type`` from the bundle metadata.
    """

    def _init_config(self, config_names: Any) -> None:
        super()._init_config(config_names)
        for conf in self._inputs.values():
            conf.setdefault("type", "image")
        self.activated = _applies_activation(self._postproc)

    def input_spatial_dims(self) -> int | None:
        """Spatial rank (2 or 3) of the bundle's first input, ``None`` when unknown or the bundle is not parsed yet.

        As the SDK decides it for array inputs: the length of ``network_data_format.inputs.<name>.spatial_shape``,
        else the SDK's guess from other keys of that input's metadata (``_infer_spatial_dimensions_from_metadata``).
        """
        inputs = getattr(self, "_inputs", None)
        if not inputs:
            return None
        conf = next(iter(inputs.values()))
        shape = conf.get("spatial_shape") if isinstance(conf, dict) else None
        if isinstance(shape, (list, tuple)) and len(shape) in (2, 3):
            return len(shape)
        return self._infer_spatial_dimensions_from_metadata(conf)

    def _send_output(self, value: Any, name: str, metadata: dict, op_output: Any, context: Any) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        out_conf = self._outputs.get(name, {})
        op_output.emit(
            {"pred": np.asarray(value), "meta": dict(metadata or {}), "activated": self.activated,
             "channel_def": out_conf.get("channel_def"), "type": out_conf.get("type")},
            name,
        )


class PredictionWriterOperator(Operator):
    """Write each prediction: NIfTI inputs to ``predictions.json`` / NIfTI label maps, DICOM series one file each.

    A prediction with no spatial axes (shape ``(C,)``) is a classification: its class probabilities (the
    post-processed output when the bundle's postprocessing applies softmax / sigmoid, else its softmax), argmax and
    class name (from ``channel_def``). A prediction with spatial axes (``(C, H, W[, D])``) is a segmentation: its
    label map is the argmax over channels (or the single channel as it is).

    NIfTI inputs: classifications are recorded under the input file's path in ``predictions.json``, rewritten after
    every file so that it is complete when the application ends; label maps are saved as ``<input name>_seg.nii.gz``
    with the input's affine.

    DICOM series (the metadata has ``SeriesInstanceUID``), one output per series named by
    :func:`series_file_name`: ``<uid>.json`` for a classifier, ``<uid>_seg.nii.gz`` (RAS affine of the SDK) for a
    segmenter. Slices of a series (2D bundles) are collected until the last one has arrived, then written at once:
    the JSON lists every slice and a series summary (:meth:`series_summary`), the label map stacks the slice label
    maps along the last axis, ``(W, H, slices)``. See the README for the exact JSON fields.

    Named input:
        pred: the dict emitted by :class:`BundleInferenceOperator`.
    """

    def __init__(self, fragment: Any, *args: Any, output_folder: str | os.PathLike, **kwargs: Any) -> None:
        self.output_folder = Path(output_folder)
        self.input_name = "pred"
        self.records: dict[str, Any] = {}
        self._pending: dict[str, dict[int, Any]] = {}  # SeriesInstanceUID -> slice index -> slice result
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.input_name)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        message = op_input.receive(self.input_name)
        pred = np.asarray(message["pred"], dtype=np.float64 if message["pred"].dtype.kind == "f" else None)
        meta = message.get("meta", {})
        self.output_folder.mkdir(parents=True, exist_ok=True)
        if meta.get(SERIES_UID_KEY) is not None:
            self.write_series_prediction(pred, message, meta)
            return
        source = str(meta.get(FILENAME_KEY, f"input_{len(self.records)}"))
        if pred.ndim <= 1:
            self.records[source] = self.classification_record(pred.reshape(-1), bool(message.get("activated")),
                                                              message.get("channel_def"))
            atomic_write_json(self.records, self.output_folder / PREDICTIONS_FILE)
        else:
            self.records[source] = {"segmentation": str(self.write_label_map(pred, meta, source))}
        logger.info("prediction for %s written", source)

    def write_series_prediction(self, pred: np.ndarray, message: dict, meta: dict) -> None:
        """Record one prediction of a DICOM series (a whole volume, or one slice) and write the series when complete."""
        uid = str(meta[SERIES_UID_KEY])
        name = series_file_name(uid)
        header = {k: _json_value(meta[k]) for k in SERIES_ATTRIBUTES if meta.get(k) is not None}
        activated, channel_def = bool(message.get("activated")), message.get("channel_def")
        if SLICE_INDEX_KEY not in meta:  # a 3D bundle: the whole series at once
            if pred.ndim <= 1:
                record = {**header, **self.classification_record(pred.reshape(-1), activated, channel_def)}
                atomic_write_json(record, self.output_folder / f"{name}.json")
            else:
                self.write_label_map(pred, meta, uid, name=name)
            logger.info("prediction for DICOM series %s written", uid)
            return
        index, count = int(meta[SLICE_INDEX_KEY]), int(meta[NUM_SLICES_KEY])
        if pred.ndim <= 1:
            result: Any = {"index": index, **{k: _json_value(meta[k]) for k in SLICE_ATTRIBUTES if k in meta},
                           **self.classification_record(pred.reshape(-1), activated, channel_def)}
        else:
            result = pred.argmax(0) if pred.shape[0] > 1 else pred[0]
        slices = self._pending.setdefault(uid, {})
        slices[index] = result
        if len(slices) < count:
            return
        ordered = [slices[k] for k in range(count)]
        del self._pending[uid]
        if isinstance(ordered[0], dict):
            record = {**header, "slices": ordered, "summary": self.series_summary(ordered, channel_def)}
            atomic_write_json(record, self.output_folder / f"{name}.json")
        else:
            affine = np.asarray(meta.get(SERIES_AFFINE_KEY, np.eye(4)), dtype=np.float64)
            self._save_labels(np.stack(ordered, -1), affine, self.output_folder / f"{name}_seg.nii.gz")
        logger.info("predictions for the %d slices of DICOM series %s written", count, uid)

    @staticmethod
    def classification_record(output: np.ndarray, activated: bool, channel_def: dict | None) -> dict[str, Any]:
        """Probabilities, argmax and class name of one classifier output."""
        probs = output if activated else torch.softmax(torch.as_tensor(output), 0).numpy()
        index = int(np.argmax(probs))
        record: dict[str, Any] = {"probabilities": [float(p) for p in probs], "argmax": index}
        if channel_def:
            record["class_name"] = channel_def.get(str(index))
        return record

    @staticmethod
    def series_summary(records: Sequence[dict], channel_def: dict | None) -> dict[str, Any]:
        """Series-level summary of per-slice classification records.

        ``votes[c]``: the number of slices whose argmax is ``c``; ``majority_argmax``: the class with most votes
        (ties go to the lowest class index); ``mean_probabilities``: the mean of the slices' probabilities;
        ``mean_argmax``: its argmax; ``*_class_name`` from ``channel_def`` when the bundle defines it.
        """
        probs = np.asarray([r["probabilities"] for r in records], dtype=np.float64)
        votes = np.bincount([int(r["argmax"]) for r in records], minlength=probs.shape[1])
        mean = probs.mean(0)
        summary: dict[str, Any] = {"num_slices": len(records), "votes": [int(v) for v in votes],
                                   "majority_argmax": int(np.argmax(votes)),
                                   "mean_probabilities": [float(p) for p in mean], "mean_argmax": int(np.argmax(mean))}
        if channel_def:
            summary["majority_class_name"] = channel_def.get(str(summary["majority_argmax"]))
            summary["mean_class_name"] = channel_def.get(str(summary["mean_argmax"]))
        return summary

    def write_label_map(self, pred: np.ndarray, meta: dict, source: str, name: str | None = None) -> Path:
        """Save the label map of a ``(C, *spatial)`` prediction as ``<name>_seg.nii.gz`` with the input's affine.

        ``name`` defaults to the file name of ``source`` without its NIfTI suffix.
        """
        labels = pred.argmax(0) if pred.shape[0] > 1 else pred[0]
        affine = np.asarray(meta.get("affine", np.eye(4)), dtype=np.float64)
        if affine.shape != (4, 4):  # a 2D image's 3x3 affine: embed it in 3D
            full = np.eye(4)
            full[:2, :2], full[:2, 3] = affine[:2, :2], affine[:2, 2]
            affine = full
        if name is None:
            name = os.path.basename(source)
            for suffix in NIFTI_SUFFIXES[::-1]:
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
        return self._save_labels(labels, affine, self.output_folder / f"{name}_seg.nii.gz")

    @staticmethod
    def _save_labels(labels: np.ndarray, affine: np.ndarray, path: Path) -> Path:
        import nibabel as nib

        nib.save(nib.Nifti1Image(np.asarray(labels).astype(np.uint8), affine), str(path))
        return path


def _json_value(value: Any) -> Any:
    """A DICOM attribute value (pydicom ``IS`` / ``DS`` / ``UID`` ...) as a plain JSON value."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return str(value)
