"""Finding the parts of an existing bundle's configuration that unlearning needs, whatever its layout."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from monai.bundle import ConfigParser

__all__ = ["BundleLayout", "BundleLayoutError", "KEY_CANDIDATES", "detect_layout", "find_bundle_config", "missing_package"]

# import names whose pip package is called otherwise
PIP_NAMES = {"skimage": "scikit-image", "PIL": "pillow", "cv2": "opencv-python", "sklearn": "scikit-learn",
             "yaml": "pyyaml", "pandas": "pandas", "torchvision": "torchvision", "itk": "itk"}

# Model Zoo bundles mostly nest sections (``train#dataset``); the zoo's templates keep them flat
# (``train_dataset``). The first key present wins; deterministic (validation) preprocessing is preferred
# so the boundary search sees the same input for a sample on every pass.
KEY_CANDIDATES: dict[str, tuple[str, ...]] = {
    "network": ("network_def", "network"),
    "datalist": ("train#dataset#data", "train_dataset#data", "train#datalist", "train_datalist", "datalist"),
    "preprocessing": ("validate#preprocessing", "val_preprocessing", "val_transforms", "train#preprocessing",
                      "train_transforms", "preprocessing"),
    "val_datalist": ("validate#dataset#data", "val_dataset#data", "validate#datalist", "val_datalist"),
    "device": ("device",),
    # segmentation bundles: a sliding-window inferer here sets the ROI of the Dice evaluation
    "inferer": ("validate#inferer", "val_inferer", "inferer"),
}
REQUIRED = ("network", "datalist", "preprocessing")


def find_bundle_config(root: str, *names: str) -> str | None:
    """The first of ``<root>/configs/<name>.json`` / ``.yaml`` / ``.yml`` that exists, trying ``names`` in order."""
    for name in names:
        for ext in (".json", ".yaml", ".yml"):
            path = os.path.join(root, "configs", name + ext)
            if os.path.isfile(path):
                return path
    return None


class BundleLayoutError(ValueError):
    """A part of the wrapped bundle's configuration could not be found."""


@dataclass
class BundleLayout:
    """The config ids of the parts of a bundle that unlearning reads (``None``: absent, optional part)."""

    network: str
    datalist: str
    preprocessing: str
    val_datalist: str | None = None
    device: str | None = None
    inferer: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """The ids as a dictionary."""
        return asdict(self)


def detect_layout(parser: ConfigParser, overrides: Mapping[str, str | None] | None = None) -> BundleLayout:
    """Find the config ids of the network, training datalist, preprocessing, validation datalist, device and inferer.

    Args:
        parser: the merged configuration of the wrapped bundle (and the unlearn overlay).
        overrides: ids the user named explicitly (``unlearn_keys`` in the overlay); ``None`` values are detected.

    Returns:
        the ids found.

    Raises:
        BundleLayoutError: when a required part is missing, or an explicitly named id does not exist; the message
            says which ids were tried and how to name the right one on the command line.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(KEY_CANDIDATES))
    if unknown:
        raise BundleLayoutError(f"unknown unlearn_keys {unknown}; the known parts are {sorted(KEY_CANDIDATES)}.")
    found: dict[str, str | None] = {}
    for part, candidates in KEY_CANDIDATES.items():
        named = overrides.get(part)
        named = named.replace("::", "#") if isinstance(named, str) else named  # MONAI normalises "#" to "::"
        if named:
            if named not in parser:
                raise BundleLayoutError(
                    f"unlearn_keys#{part} names {named!r}, which is not in the bundle config."
                )
            found[part] = named
            continue
        found[part] = next((key for key in candidates if key in parser), None)
        if found[part] is None and part in REQUIRED:
            tried = ", ".join(repr(c) for c in candidates)
            raise BundleLayoutError(
                f"cannot find the bundle's {part}: none of the config ids {tried} exists. Name the id that holds "
                f"it with an override, e.g. `--unlearn_keys#{part} <config id>`."
            )
    return BundleLayout(**found)  # type: ignore[arg-type]


def missing_package(error: BaseException) -> str | None:
    """The pip package whose absence caused ``error`` (through MONAI's "Failed to ..." wrappers), or ``None``.

    Recognises ``ModuleNotFoundError`` from a ``$import`` or a transform's own import, and MONAI's
    "Cannot locate class or function path" for a ``_target_`` whose top-level module is not installed.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ModuleNotFoundError):
            name = current.name
            if name is None:
                match = re.search(r"(?:No module named|Cannot locate class or function path:) '([\w.]+)'", str(current))
                name = match.group(1) if match else None
            if name:
                top = name.split(".")[0]
                if importlib.util.find_spec(top) is None:
                    return PIP_NAMES.get(top, top)
        current = current.__cause__ or current.__context__
    return None
