"""Reading datalist values for forget selection: scalars, numbers, class labels, and files listing item ids."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["ForgetSelectionError", "normalize_label", "read_ids_file"]


class ForgetSelectionError(ValueError):
    """Raised when a forget-set request cannot be satisfied or is malformed.

    It is a ``ValueError``, so callers that already catch ``ValueError`` keep working.
    """


# ----------------------------------------------------------------------------------------------------------
# value helpers
# ----------------------------------------------------------------------------------------------------------
def _as_scalar(value: Any) -> Any:
    """Unwrap numpy scalars and one-element arrays/tensors to plain Python values; leave others alone."""
    if isinstance(value, torch.Tensor):
        return value.reshape(-1)[0].item() if value.numel() == 1 else value
    if isinstance(value, np.ndarray):
        return value.reshape(-1)[0].item() if value.size == 1 else value
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _to_number(text: str) -> int | float | None:
    """Parse ``text`` as an int or a float; ``None`` when it is neither."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _values_match(item_value: Any, wanted: Any) -> bool:
    """Compare a datalist value with a requested one, letting ``3``, ``3.0`` and ``"3"`` match one another."""
    item_value, wanted = _as_scalar(item_value), _as_scalar(wanted)
    try:
        equal = item_value == wanted
        if isinstance(equal, bool) and equal:
            return True
    except Exception:  # exotic types whose comparison raises
        pass
    if isinstance(item_value, str) and _is_number(wanted):
        number = _to_number(item_value)
        return number is not None and number == wanted
    if isinstance(wanted, str) and _is_number(item_value):
        number = _to_number(wanted)
        return number is not None and number == item_value
    if isinstance(wanted, str) and isinstance(item_value, bool):
        return wanted.strip().lower() == str(item_value).lower()
    return False


def normalize_label(label: Any) -> int:
    """Turn one item's class label into a plain ``int``.

    Accepted forms: a Python or numpy integer, an integral float (``3.0``), a numeric string (``"3"``), a
    0-d or one-element array/tensor/list, or a one-hot vector (list, array or tensor with more than one
    element, all 0 or 1, exactly one 1).

    Args:
        label: the label as it is stored in the datalist or dataset.

    Returns:
        the class index.

    Raises:
        ForgetSelectionError: when the label is not a single class index (a path to a segmentation mask,
            a multi-hot vector, a non-integral float, ...).
    """
    original = label
    if isinstance(label, (list, tuple)):
        label = np.asarray(label)
    if isinstance(label, torch.Tensor):
        label = label.detach().cpu().numpy()
    if isinstance(label, np.ndarray):
        if label.size == 1:
            label = label.reshape(-1)[0].item()
        elif label.ndim == 1 and label.size > 1 and np.isin(label, (0, 1)).all() and label.sum() == 1:
            return int(np.argmax(label))
        else:
            raise ForgetSelectionError(
                f"label {original!r} is neither a class index nor a one-hot vector with exactly one 1."
            )
    label = _as_scalar(label)
    if isinstance(label, str):
        number = _to_number(label)
        if number is None:
            raise ForgetSelectionError(
                f"label {original!r} is not a class index; selecting by label works for classification "
                "datalists. For segmentation or metadata use `key=`/`value=`, `predicate=` or `ids=`."
            )
        label = number
    if isinstance(label, bool) or not _is_number(label) or float(label) != int(label):
        raise ForgetSelectionError(f"label {original!r} is not an integral class index.")
    return int(label)


def read_ids_file(path: str | os.PathLike, id_key: str = "image") -> list[str]:
    """Read item ids from a text or JSON file.

    Text files (any suffix but ``.json``) hold one id per line; blank lines and lines starting with ``#``
    are ignored and surrounding whitespace is stripped. JSON files hold a list of strings, or a list of
    dicts from which ``id_key`` is read (for instance the forget part of a MONAI datalist).

    Args:
        path: the file to read.
        id_key: the key to read from dict entries of a JSON list.

    Returns:
        the ids in file order.

    Raises:
        ForgetSelectionError: when the file is missing, or its JSON content has another layout.
    """
    path = Path(path)
    if not path.is_file():
        raise ForgetSelectionError(f"ids file {str(path)!r} does not exist.")
    if path.suffix.lower() == ".json":
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
        if not isinstance(content, list):
            raise ForgetSelectionError(
                f"ids file {str(path)!r} must hold a JSON list of strings or of dicts, got {type(content).__name__}."
            )
        ids = []
        for i, entry in enumerate(content):
            if isinstance(entry, Mapping):
                if id_key not in entry:
                    raise ForgetSelectionError(
                        f"entry {i} of ids file {str(path)!r} has no key {id_key!r}; "
                        f"its keys: {sorted(map(str, entry))}."
                    )
                ids.append(str(entry[id_key]))
            elif isinstance(entry, (str, int)) and not isinstance(entry, bool):
                ids.append(str(entry))
            else:
                raise ForgetSelectionError(
                    f"entry {i} of ids file {str(path)!r} is a {type(entry).__name__}; expected a string or a dict."
                )
        return ids
    with open(path, encoding="utf-8") as f:
        lines = (line.strip() for line in f)
        return [line for line in lines if line and not line.startswith("#")]


def _id_forms(value: Any) -> tuple[str, str]:
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    return text, os.path.normpath(text) if text else text


