"""MONAI Deploy operators for running an unlearned bundle: load NIfTI files or DICOM series, infer with the bundle,
write results.

The App SDK is imported through ``monai.utils.optional_import`` (``monai_unlearn.deploy.sdk``): without it this module still imports (the
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_unlearn.deploy.inputs import (
    FILENAME_KEY,
    INPUT_FORMATS,
    NIFTI_SUFFIXES,
    NUM_SLICES_KEY,
    PREDICTIONS_FILE,
    SERIES_AFFINE_KEY,
    SERIES_ATTRIBUTES,
    SERIES_UID_KEY,
    SLICE_ATTRIBUTES,
    SLICE_INDEX_KEY,
    detect_input_format,
    dicom_problem,
    is_dicom_file,
    list_dicom_files,
    list_nifti_files,
    series_file_name,
)
from monai_unlearn.deploy.loader_operators import (
    DICOMSeriesImageOperator,
    DICOMStudyLoaderOperator,
    NiftiImageLoaderOperator,
)
from monai_unlearn.deploy.sdk import MonaiBundleInferenceOperator, Operator, OperatorSpec
from monai_unlearn.io import atomic_write_json

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

logger = logging.getLogger(__name__)


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
