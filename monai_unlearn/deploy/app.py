"""A MONAI Deploy App SDK application that runs a bundle written by the unlearn command on NIfTI images or DICOM series.

Run it with the deploy environment's interpreter (``scripts/setup_deploy_env.sh``)::

    .venv-deploy/bin/python -m monai_unlearn.deploy.app -i IN -o OUT -m BUNDLE/models/model.ts \
        [--input-format {auto,nifti,dicom}] [--dicom-rules RULES.json]

``IN`` is a NIfTI file, or a folder searched recursively for ``.nii`` / ``.nii.gz`` files or for DICOM files
(``DICM`` at byte 128); ``--input-format`` (default ``auto``: by content) says which. ``-m`` is the bundle's
TorchScript file (``models/model.ts``, with ``metadata.json`` and ``inference.json`` embedded, as
``python -m monai.bundle ckpt_export`` and ``monai_unlearn`` write it). The graphs are::

    NiftiImageLoaderOperator --image--> BundleInferenceOperator --pred--> PredictionWriterOperator

    DICOMStudyLoaderOperator --> DICOMSeriesSelectorOperator --> DICOMSeriesImageOperator --image-->
        BundleInferenceOperator --pred--> PredictionWriterOperator

NIfTI: classifiers give ``OUT/predictions.json`` (per input file: class probabilities, argmax, class name);
segmenters give ``OUT/<name>_seg.nii.gz``. DICOM: one output per selected series, named by its SeriesInstanceUID:
``OUT/<uid>.json`` for classifiers (a 2D classifier classifies every slice and summarises the series),
``OUT/<uid>_seg.nii.gz`` for segmenters. The same ``-i/-o/-m`` are read from ``HOLOSCAN_INPUT_PATH``,
``HOLOSCAN_OUTPUT_PATH`` and ``HOLOSCAN_MODEL_PATH`` when the app runs as a MONAI Application Package.

The bundle's embedded ``inference.json`` is parsed and its ``$`` expressions run: deploy only bundles you trust.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.utils import optional_import

from monai_unlearn.deploy.operators import (
    INPUT_FORMATS,
    BundleInferenceOperator,
    DICOMSeriesImageOperator,
    DICOMStudyLoaderOperator,
    NiftiImageLoaderOperator,
    PredictionWriterOperator,
    detect_input_format,
    list_nifti_files,
)

Application, has_sdk = optional_import("monai.deploy.core", name="Application", as_type="base")

__all__ = ["UnlearnedBundleApp", "main", "parse_app_options", "read_dicom_rules"]

logger = logging.getLogger(__name__)


def read_dicom_rules(path: str | None) -> str:
    """The text of a ``DICOMSeriesSelectorOperator`` rules file (``""`` for none), checked to be JSON with
    ``"selections"``.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ValueError: when it is not such JSON.
    """
    if not path:
        return ""
    if not Path(path).is_file():
        raise FileNotFoundError(f"DICOM selection rules file {path} does not exist.")
    text = Path(path).read_text()
    try:
        rules = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"DICOM selection rules file {path} is not valid JSON: {e}") from e
    if not isinstance(rules, dict) or not rules.get("selections"):
        raise ValueError(f'DICOM selection rules file {path} has no "selections" list (see the README).')
    return text


def parse_app_options(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """This app's own options (``--input-format``, ``--dicom-rules``) and the rest, for the SDK's parser."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--input-format", choices=INPUT_FORMATS, default="auto",
                        help="what IN holds: auto (by content), nifti or dicom")
    parser.add_argument("--dicom-rules", default=None,
                        help="JSON file of DICOMSeriesSelectorOperator rules (default: select every series)")
    return parser.parse_known_args(list(argv))


class UnlearnedBundleApp(Application):
    """Load NIfTI images or DICOM series, infer with a TorchScript MONAI bundle, write JSON (classifiers) or NIfTI
    (segmenters).

    Args:
        argv: as for the SDK's ``Application`` (interpreter, program, then ``-i IN -o OUT -m MODEL``).
        input_format: ``"auto"``, ``"nifti"`` or ``"dicom"`` (see :func:`detect_input_format`).
        dicom_rules: a JSON file of ``DICOMSeriesSelectorOperator`` selection rules; every matching series is used.
            ``None``: every series.
    """

    name = "monai-unlearn-bundle-app"
    description = "Runs a MONAI bundle (e.g. one revised by monai_unlearn) on NIfTI images or DICOM series."
    version = "0.1.0"

    def __init__(self, argv: list[str] | None = None, *args: Any, input_format: str = "auto",
                 dicom_rules: str | None = None, **kwargs: Any) -> None:
        self.input_format = input_format
        self.dicom_rules = dicom_rules
        super().__init__(argv, *args, **kwargs)

    def compose(self) -> None:
        from monai.deploy.conditions import CountCondition
        from monai.deploy.core import Image, IOType
        from monai.deploy.operators.monai_bundle_inference_operator import BundleConfigNames, IOMapping

        app_context = Application.init_app_context(self.argv)
        input_path = Path(app_context.input_path)
        input_format = detect_input_format(input_path, self.input_format)  # fails before the bundle is parsed
        rules = read_dicom_rules(self.dicom_rules) if input_format == "dicom" else ""
        if self.dicom_rules and input_format != "dicom":
            logger.warning("--dicom-rules is ignored for NIfTI input")
        model_path = self._bundle_file(app_context)
        if model_path is not None and Path(app_context.model_path).is_dir():
            # the SDK's model factory wraps a folder without loading it ("a predictor of the model is not set"):
            # have the operator load the resolved TorchScript file instead
            app_context.models = None
        logger.info("%s input from %s; model %s", input_format, input_path, model_path or app_context.model_path)

        infer = BundleInferenceOperator(
            self, app_context=app_context, bundle_path=model_path,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", dict, IOType.IN_MEMORY)],
            bundle_config_names=BundleConfigNames(config_names=["inference"]), name="bundle_inference_op",
        )
        writer = PredictionWriterOperator(self, output_folder=app_context.output_path, name="prediction_writer_op")
        if input_format == "nifti":
            files = list_nifti_files(input_path)
            logger.info("%d NIfTI file(s)", len(files))
            loader = NiftiImageLoaderOperator(self, CountCondition(self, count=len(files)), files=files,
                                              name="nifti_loader_op")
            self.add_flow(loader, infer, {("image", "image")})
        else:
            self._compose_dicom(input_path, rules, infer)
        self.add_flow(infer, writer, {("pred", "pred")})

    def _compose_dicom(self, input_path: Path, rules: str, infer: Any) -> None:
        """The SDK's DICOM loader -> series selector -> series-to-volume chain into ``infer``."""
        from monai.deploy.conditions import CountCondition
        from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator

        spatial_dims = infer.input_spatial_dims()
        if spatial_dims is None:
            logger.warning("the spatial rank of the bundle's input is unknown (no network_data_format.inputs.<name>."
                           "spatial_shape in its metadata, or -m is a folder, parsed only at run time): each DICOM "
                           "series goes in as a 3D volume")
            spatial_dims = 3
        logger.info("DICOM series to a %dD bundle: %s", spatial_dims,
                    "one volume per series" if spatial_dims == 3 else "slice by slice")
        loader = DICOMStudyLoaderOperator(self, CountCondition(self, count=1), input_folder=input_path,
                                          name="dicom_loader_op")
        selector = DICOMSeriesSelectorOperator(self, rules=rules, all_matched=True, name="dicom_series_selector_op")
        images = DICOMSeriesImageOperator(self, spatial_dims=spatial_dims, name="dicom_series_image_op")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, images, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(images, infer, {("image", "image")})

    @staticmethod
    def _bundle_file(app_context: Any) -> Path | None:
        """The TorchScript bundle ``-m`` names: the file itself, or the one ``.ts`` file in a model folder.

        A MAP mounts its model folder at ``HOLOSCAN_MODEL_PATH``; ``model.ts``, ``models/model.ts`` or a single
        ``*.ts`` file in it is used. ``None`` for other folders, which the SDK's operator resolves at run time.
        """
        model_path = Path(app_context.model_path)
        if model_path.is_file():
            return model_path
        for candidate in (model_path / "model.ts", model_path / "models" / "model.ts"):
            if candidate.is_file():
                return candidate
        found = sorted(model_path.glob("*.ts")) if model_path.is_dir() else []
        return found[0] if len(found) == 1 else None


def main(argv: list[str] | None = None) -> Any:
    """Run the application (``argv`` as ``sys.argv``: program name first, then ``-i IN -o OUT -m MODEL`` and the
    options of :func:`parse_app_options`).

    Raises:
        ImportError: when the MONAI Deploy App SDK is not installed in this interpreter.
    """
    if not has_sdk:
        raise ImportError(
            "the MONAI Deploy App SDK is not installed in this interpreter; create its environment with "
            "`bash scripts/setup_deploy_env.sh` and run `.venv-deploy/bin/python -m monai_unlearn.deploy.app ...`."
        )
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv if argv is None else argv)
    options, rest = parse_app_options(argv[1:])
    if {"-h", "--help"} & set(rest):
        print("usage: python -m monai_unlearn.deploy.app -i IN -o OUT -m BUNDLE/models/model.ts "
              f"[--input-format {{{','.join(INPUT_FORMATS)}}}] [--dicom-rules RULES.json] (see "
              "monai_unlearn/deploy/README.md); the SDK's and Holoscan's own options follow.")
    # Holoscan's Application drops the first item of an explicit argv (it expects the interpreter's), and the
    # SDK's parse_args then drops the program name: give it both
    app = UnlearnedBundleApp([sys.executable, argv[0], *rest], input_format=options.input_format,
                             dicom_rules=options.dicom_rules)
    app.run()
    return app


if __name__ == "__main__":
    main()
