"""The config ids of the unlearn overlay a user can override, with their defaults (``python -m monai_unlearn ids``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from monai_unlearn.bundle.settings import OVERLAY_CONFIG

__all__ = ["overlay_ids", "format_ids"]


def _walk(prefix: str, value: Any, rows: list[tuple[str, Any]]) -> None:
    if isinstance(value, Mapping) and value and prefix.startswith("unlearn#"):
        for key, sub in value.items():
            _walk(f"{prefix}#{key}", sub, rows)
        return
    rows.append((prefix, value))


def overlay_ids(config_file: str = OVERLAY_CONFIG) -> list[tuple[str, Any]]:
    """Every overridable id of the overlay and its default, in file order: the settings (``unlearn_lr``, ...) and
    each field of the ``unlearn`` components (``unlearn#optimizer#lr``, ``unlearn#trainer#max_epochs``, ...)."""
    with open(config_file) as f:
        config = json.load(f)
    rows: list[tuple[str, Any]] = []
    for key, value in config.items():
        if key == "unlearn":
            for component, body in value.items():
                _walk(f"unlearn#{component}", body, rows)
        else:
            rows.append((key, value))
    return rows


def format_ids(rows: list[tuple[str, Any]]) -> str:
    """One ``id  default`` line per id, aligned."""
    width = max(len(key) for key, _ in rows) + 2
    return "\n".join(f"{key.ljust(width)}{json.dumps(value)}" for key, value in rows)
