"""The wrapped bundle's training data as a list of dict items, whatever holds it: a list of path dicts, a
``Subset`` or ``partition_dataset`` part, a MONAI ``Dataset`` / ``CacheDataset`` / ``PersistentDataset``, an
``NPZDictItemDataset`` or any indexable collection of mappings."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from torch.utils.data import Subset

__all__ = ["DatalistItems", "datalist_items", "item_content_sha256", "item_path"]


@dataclass
class DatalistItems:
    """The items at a datalist config id.

    Attributes:
        items: the dict items, in the collection's order (an item's index is its position here).
        transformed: ``True`` when the collection applied its own transforms to the items (they are used as they
            are, without the bundle's preprocessing on top).
        source: what the config id held, for messages and the report (e.g. ``"Subset of NPZDictItemDataset"``).
    """

    items: list[Mapping[str, Any]]
    transformed: bool
    source: str


def _applies_transform(obj: Any) -> bool:
    """Whether a dataset object transforms the items it yields (MONAI turns ``transform=None`` into an empty
    ``Compose``, which does not count)."""
    transform = getattr(obj, "transform", None)
    if transform is None:
        return False
    return not (isinstance(transform, Compose) and not transform.transforms)


def _raw_items(obj: Any) -> tuple[list[Any], bool, str]:
    if isinstance(obj, (list, tuple)):
        return list(obj), False, type(obj).__name__
    if isinstance(obj, Subset):
        inner, transformed, source = _raw_items(obj.dataset)
        return [inner[int(i)] for i in obj.indices], transformed, f"Subset of {source}"
    data = getattr(obj, "data", None)
    if isinstance(data, Sequence) and not isinstance(data, str) and hasattr(obj, "__len__") and len(data) == len(obj):
        return list(data), False, type(obj).__name__  # MONAI datasets keep their raw items in .data
    if hasattr(obj, "__len__") and hasattr(obj, "__getitem__"):
        return [obj[i] for i in range(len(obj))], _applies_transform(obj), type(obj).__name__
    raise TypeError(type(obj).__name__)


def datalist_items(obj: Any, config_id: str) -> DatalistItems:
    """The dict items of whatever the datalist config id holds.

    A ``Subset`` is unwrapped to its dataset's items at its indices; a MONAI dataset gives its raw ``.data`` items
    (the bundle's preprocessing is applied to them later, once); any other collection with ``__len__`` and
    ``__getitem__`` gives ``obj[i]`` (already transformed when the object has a ``transform``).

    Raises:
        ValueError: when the id holds nothing indexable, or items that are not mappings; the message names what
            was found and how to name another id.
    """
    hint = ("name the config id of the training data (a list of dicts or a dataset of dict items) with "
            "`--unlearn_keys#datalist <config id>`")
    try:
        items, transformed, source = _raw_items(obj)
    except TypeError:
        raise ValueError(f"the training data at config id {config_id!r} is a {type(obj).__name__}, which has no "
                         f"items to index; {hint}.") from None
    if not items:
        raise ValueError(f"the training data at config id {config_id!r} ({source}) is empty; {hint}.")
    bad = next((i for i, item in enumerate(items) if not isinstance(item, Mapping)), None)
    if bad is not None:
        raise ValueError(f"the training data at config id {config_id!r} ({source}) does not yield dict items: item "
                         f"{bad} is a {type(items[bad]).__name__}; {hint}.")
    return DatalistItems(items, transformed, source)


def item_path(item: Mapping[str, Any], id_key: str = "image") -> str | None:
    """The item's identifying path (its ``id_key`` entry when that is a path string), else ``None``."""
    value = item.get(id_key)
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else None


def item_content_sha256(item: Mapping[str, Any]) -> str:
    """SHA-256 over an in-memory item's content: each key (sorted) with its value's dtype, shape and bytes.

    Arrays and tensors are hashed by their bytes, other values by their text, so the same item always gives the
    same hash and a reviewer holding the dataset can check a listed item.
    """
    digest = hashlib.sha256()
    for key in sorted(map(str, item)):
        value = item[key]
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()
