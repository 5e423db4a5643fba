"""MONAI Deploy operators for running an unlearned bundle: load NIfTI files, infer with the bundle, write results.

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
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import optional_import

Operator, _ = optional_import("monai.deploy.core", name="Operator", as_type="base")
Image, _ = optional_import("monai.deploy.core", name="Image")
OperatorSpec, _ = optional_import("monai.deploy.core", name="OperatorSpec")
MonaiBundleInferenceOperator, _ = optional_import(
    "monai.deploy.operators.monai_bundle_inference_operator", name="MonaiBundleInferenceOperator", as_type="base"
)

__all__ = [
    "NIFTI_SUFFIXES",
    "list_nifti_files",
    "NiftiImageLoaderOperator",
    "BundleInferenceOperator",
    "PredictionWriterOperator",
    "PREDICTIONS_FILE",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
PREDICTIONS_FILE = "predictions.json"
FILENAME_KEY = "filename_or_obj"
logger = logging.getLogger(__name__)


def list_nifti_files(path: str | os.PathLike) -> list[Path]:
    """The NIfTI files at ``path``: the file itself, or every ``.nii`` / ``.nii.gz`` below the folder, sorted.

    Raises:
        FileNotFoundError: when ``path`` does not exist or holds no NIfTI file.
    """
    path = Path(path)
    if path.is_file():
        files = [path] if str(path).endswith(NIFTI_SUFFIXES) else []
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and str(p).endswith(NIFTI_SUFFIXES))
    else:
        raise FileNotFoundError(f"input path {path} does not exist.")
    if not files:
        raise FileNotFoundError(f"no NIfTI file ({', '.join(NIFTI_SUFFIXES)}) at {path}.")
    return files


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
    """Write each prediction: classifier outputs to ``predictions.json``, label maps to NIfTI files.

    A prediction with no spatial axes (shape ``(C,)``) is a classification: its class probabilities (the
    post-processed output when the bundle's postprocessing applies softmax / sigmoid, else its softmax), argmax and
    class name (from ``channel_def``) are recorded under the input file's path; ``predictions.json`` is rewritten
    after every file, so it is complete when the application ends. A prediction with spatial axes
    (``(C, H, W[, D])``) is a segmentation: its label map (argmax over channels, or the single channel as it is)
    is saved as ``<input name>_seg.nii.gz`` with the input's affine.

    Named input:
        pred: the dict emitted by :class:`BundleInferenceOperator`.
    """

    def __init__(self, fragment: Any, *args: Any, output_folder: str | os.PathLike, **kwargs: Any) -> None:
        self.output_folder = Path(output_folder)
        self.input_name = "pred"
        self.records: dict[str, Any] = {}
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.input_name)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        message = op_input.receive(self.input_name)
        pred = np.asarray(message["pred"], dtype=np.float64 if message["pred"].dtype.kind == "f" else None)
        meta = message.get("meta", {})
        source = str(meta.get(FILENAME_KEY, f"input_{len(self.records)}"))
        self.output_folder.mkdir(parents=True, exist_ok=True)
        if pred.ndim <= 1:
            self.records[source] = self.classification_record(pred.reshape(-1), bool(message.get("activated")),
                                                              message.get("channel_def"))
            tmp = self.output_folder / f".{PREDICTIONS_FILE}.tmp"
            tmp.write_text(json.dumps(self.records, indent=2))
            os.replace(tmp, self.output_folder / PREDICTIONS_FILE)
        else:
            self.records[source] = {"segmentation": str(self.write_label_map(pred, meta, source))}
        logger.info("prediction for %s written", source)

    @staticmethod
    def classification_record(output: np.ndarray, activated: bool, channel_def: dict | None) -> dict[str, Any]:
        """Probabilities, argmax and class name of one classifier output."""
        probs = output if activated else torch.softmax(torch.as_tensor(output), 0).numpy()
        index = int(np.argmax(probs))
        record: dict[str, Any] = {"probabilities": [float(p) for p in probs], "argmax": index}
        if channel_def:
            record["class_name"] = channel_def.get(str(index))
        return record

    def write_label_map(self, pred: np.ndarray, meta: dict, source: str) -> Path:
        """Save the label map of a ``(C, *spatial)`` prediction next to the JSON, with the input's affine."""
        import nibabel as nib

        labels = pred.argmax(0) if pred.shape[0] > 1 else pred[0]
        affine = np.asarray(meta.get("affine", np.eye(4)), dtype=np.float64)
        if affine.shape != (4, 4):  # a 2D image's 3x3 affine: embed it in 3D
            full = np.eye(4)
            full[:2, :2], full[:2, 3] = affine[:2, :2], affine[:2, 2]
            affine = full
        name = os.path.basename(source)
        for suffix in NIFTI_SUFFIXES[::-1]:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        path = self.output_folder / f"{name}_seg.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(labels).astype(np.uint8), affine), str(path))
        return path
