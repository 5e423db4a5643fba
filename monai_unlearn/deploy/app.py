"""A MONAI Deploy App SDK application that runs a bundle written by the unlearn command on NIfTI images.

Run it with the deploy environment's interpreter (``scripts/setup_deploy_env.sh``)::

    .venv-deploy/bin/python -m monai_unlearn.deploy.app -i IN -o OUT -m BUNDLE/models/model.ts

``IN`` is a NIfTI file or a folder searched recursively for ``.nii`` / ``.nii.gz``; ``-m`` is the bundle's
TorchScript file (``models/model.ts``, with ``metadata.json`` and ``inference.json`` embedded, as
``python -m monai.bundle ckpt_export`` and ``monai_unlearn`` write it). The graph is::

    NiftiImageLoaderOperator --image--> BundleInferenceOperator --pred--> PredictionWriterOperator

Classifiers give ``OUT/predictions.json`` (per input file: class probabilities, argmax, class name); segmenters
give ``OUT/<name>_seg.nii.gz``. The same ``-i/-o/-m`` are read from ``HOLOSCAN_INPUT_PATH``,
``HOLOSCAN_OUTPUT_PATH`` and ``HOLOSCAN_MODEL_PATH`` when the app runs as a MONAI Application Package.

The bundle's embedded ``inference.json`` is parsed and its ``$`` expressions run: deploy only bundles you trust.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from monai.utils import optional_import

from monai_unlearn.deploy.operators import (
    BundleInferenceOperator,
    NiftiImageLoaderOperator,
    PredictionWriterOperator,
    list_nifti_files,
)

Application, has_sdk = optional_import("monai.deploy.core", name="Application", as_type="base")

__all__ = ["UnlearnedBundleApp", "main"]

logger = logging.getLogger(__name__)


class UnlearnedBundleApp(Application):
    """Load NIfTI images, infer with a TorchScript MONAI bundle, write JSON (classifiers) or NIfTI (segmenters)."""

    name = "monai-unlearn-bundle-app"
    description = "Runs a MONAI bundle (e.g. one revised by monai_unlearn) on NIfTI images."
    version = "0.1.0"

    def compose(self) -> None:
        from monai.deploy.conditions import CountCondition
        from monai.deploy.core import Image, IOType
        from monai.deploy.operators.monai_bundle_inference_operator import BundleConfigNames, IOMapping

        app_context = Application.init_app_context(self.argv)
        files = list_nifti_files(app_context.input_path)
        model_path = Path(app_context.model_path)
        logger.info("%d input file(s) from %s; model %s", len(files), app_context.input_path, model_path)

        loader = NiftiImageLoaderOperator(self, CountCondition(self, count=len(files)), files=files,
                                          name="nifti_loader_op")
        infer = BundleInferenceOperator(
            self, app_context=app_context, bundle_path=model_path if model_path.is_file() else None,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", dict, IOType.IN_MEMORY)],
            bundle_config_names=BundleConfigNames(config_names=["inference"]), name="bundle_inference_op",
        )
        writer = PredictionWriterOperator(self, output_folder=app_context.output_path, name="prediction_writer_op")
        self.add_flow(loader, infer, {("image", "image")})
        self.add_flow(infer, writer, {("pred", "pred")})


def main(argv: list[str] | None = None) -> Any:
    """Run the application (``argv`` as ``sys.argv``: program name first, then ``-i IN -o OUT -m MODEL``).

    Raises:
        ImportError: when the MONAI Deploy App SDK is not installed in this interpreter.
    """
    if not has_sdk:
        raise ImportError(
            "the MONAI Deploy App SDK is not installed in this interpreter; create its environment with "
            "`bash scripts/setup_deploy_env.sh` and run `.venv-deploy/bin/python -m monai_unlearn.deploy.app ...`."
        )
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    # Holoscan's Application drops the first item of an explicit argv (it expects the interpreter's), and the
    # SDK's parse_args then drops the program name: give it both
    app = UnlearnedBundleApp() if argv is None else UnlearnedBundleApp([sys.executable, *argv])
    app.run()
    return app


if __name__ == "__main__":
    main()
