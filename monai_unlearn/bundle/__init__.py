"""The bundle layer: wrap an existing MONAI bundle, unlearn, and write a new deployable bundle."""

from __future__ import annotations

from monai_unlearn.bundle.audit import build_audit, sha256_file, sha256_text
from monai_unlearn.bundle.checkpoint import load_bundle_weights
from monai_unlearn.bundle.forget_items import is_segmentation_datalist, select_segmentation_forget
from monai_unlearn.bundle.layout import KEY_CANDIDATES, BundleLayout, BundleLayoutError, detect_layout
from monai_unlearn.bundle.parser import calling_config_parser
from monai_unlearn.bundle.request import UnlearningRequest
from monai_unlearn.bundle.settings import DEFAULT_SETTINGS, OVERLAY_CONFIG, REPORT_DIR, psg_config
from monai_unlearn.bundle.workflow import UnlearnWorkflow, unlearn_from_parser, unlearn_running_bundle
from monai_unlearn.bundle.writer import bump_version, export_torchscript, write_new_bundle
