"""The overlay's settings: where ``unlearn.json`` lies, its defaults, and reading them from a merged config."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from monai.bundle import ConfigParser

from monai_unlearn.core.config import PSGConfig

__all__ = ["OVERLAY_CONFIG", "DEFAULT_SETTINGS", "REPORT_DIR", "as_bool", "psg_config", "selector_text", "setting"]

#: the overlay config, shipped with the package (``bundles/unlearn/configs/unlearn.json`` links to it).
OVERLAY_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "unlearn.json")
#: the folder of the new bundle that holds the report and the audit.
REPORT_DIR = "unlearning"


def _overlay_settings() -> dict[str, Any]:
    with open(OVERLAY_CONFIG) as f:
        config = json.load(f)
    return {key: value for key, value in config.items() if key.startswith("unlearn_") or key in ("forget", "output_dir")}


#: every setting of the overlay with its default (the top-level ids of ``unlearn.json`` other than ``unlearn``).
DEFAULT_SETTINGS: dict[str, Any] = _overlay_settings()


def as_bool(key: str, value: Any) -> bool:
    """A flag from a config value; command lines pass ``--unlearn_resume false`` as text, never read as ``bool(text)``.

    Raises:
        ValueError: for text that is not a flag.
    """
    if not isinstance(value, str):
        return bool(value)
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"{key} must be true or false, got {value!r}.")


def setting(parser: ConfigParser, key: str) -> Any:
    """A setting's value from the merged config, its default when absent or ``None``; flags read as booleans and
    dictionaries merged over their defaults (``--unlearn_params#eps 0.1`` keeps the other parameters)."""
    default = DEFAULT_SETTINGS[key]
    if key not in parser:
        return default
    value = parser.get_parsed_content(key)
    if isinstance(default, Mapping) and isinstance(value, Mapping):
        return {**default, **value}
    if isinstance(default, bool):
        return as_bool(key, value)
    return default if value is None else value


def psg_config(params: Mapping[str, Any] | None = None) -> PSGConfig:
    """The ``PSGConfig`` of the overlay's ``unlearn_params`` merged over their defaults (validated there).

    Raises:
        TypeError: for an unknown parameter; ``ValueError`` for an invalid value (raised by ``PSGConfig``).
    """
    return PSGConfig(**{**DEFAULT_SETTINGS["unlearn_params"], **dict(params or {})})


def selector_text(forget: Any) -> str:
    """The forget selector as text: a class index becomes ``label=<k>``.

    Raises:
        ValueError: when no selector was given.
    """
    if isinstance(forget, bool) or forget is None:
        raise ValueError("no forget set given: pass `--forget <label | key=value | ids file>`.")
    if isinstance(forget, (int, float)):
        return f"label={int(forget)}"
    return str(forget)
