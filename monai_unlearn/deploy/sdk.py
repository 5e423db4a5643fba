"""The MONAI Deploy App SDK classes the operators build on, imported lazily: without the SDK this still imports
(the operators then fail on construction with a message naming the missing package)."""

from __future__ import annotations

from monai.utils import optional_import

__all__ = ["Operator", "Image", "OperatorSpec", "ConditionType", "MonaiBundleInferenceOperator",
           "DICOMDataLoaderOperator", "DICOMSeriesToVolumeOperator"]

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
