"""Choosing the forget set: split a MONAI datalist (or a sequence of labels) into forget and remain parts.

A forget set can be named by class (``label=3`` or ``label=[1, 4]``), by a fraction or a count of the items
that match (``fraction=0.1``, seeded random or the first ones in order), by any metadata key of the datalist
(``key="device", value="scannerA"``), by a predicate on the item, or by an explicit list of item ids, given
inline or read from a text or JSON file. Criteria that are given together must all hold (logical AND); the
fraction or count then picks among the items that satisfy them. The remain set is everything else, and both
parts keep the datalist's order.

``monai_unlearn.core.forget_selector.parse_forget_selector`` turns a short command-line string such as
``"label=3,fraction=0.1,seed=1"`` into the keyword arguments of :func:`select_forget`.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from monai_unlearn.core.datalist_values import (
    ForgetSelectionError,
    _id_forms,
    _is_number,
    _values_match,
    normalize_label,
    read_ids_file,
)

__all__ = [
    "ForgetSelectionError",
    "normalize_label",
    "read_ids_file",
    "select_forget",
    "select_forget_indices",
    "read_positions",
]

_MAX_LISTED = 5




def _requested_labels(label: Any, num_classes: int | None) -> set[int]:
    """Normalise the ``label`` argument (one class or a collection of classes) and check it against the model."""
    if isinstance(label, torch.Tensor):
        label = label.detach().cpu().numpy()
    if isinstance(label, np.ndarray):
        label = label.reshape(-1).tolist() if label.size != 1 else label
    if isinstance(label, (list, tuple, set, frozenset)):
        if len(label) == 0:
            raise ForgetSelectionError("`label` is an empty collection; give at least one class index.")
        wanted = {normalize_label(v) for v in label}
    else:
        wanted = {normalize_label(label)}
    if num_classes is not None:
        if num_classes < 1:
            raise ForgetSelectionError(f"`num_classes` must be at least 1, got {num_classes}.")
        outside = sorted(c for c in wanted if not 0 <= c < num_classes)
        if outside:
            raise ForgetSelectionError(
                f"label(s) {outside} are outside the model's classes: valid labels are 0..{num_classes - 1} "
                f"(num_classes={num_classes})."
            )
    return wanted


# ----------------------------------------------------------------------------------------------------------
# amount: fraction / count
# ----------------------------------------------------------------------------------------------------------
def _check_amount(fraction: float | None, count: int | None, first_k: bool) -> None:
    if fraction is not None and count is not None:
        raise ForgetSelectionError("give either `fraction` or `count`, not both.")
    if fraction is not None:
        if isinstance(fraction, bool) or not _is_number(fraction) or not 0.0 < float(fraction) <= 1.0:
            raise ForgetSelectionError(f"`fraction` must be in (0, 1], got {fraction!r}.")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ForgetSelectionError(f"`count` must be a positive integer, got {count!r}.")
    if first_k and fraction is None and count is None:
        raise ForgetSelectionError("`first_k=True` needs `fraction` or `count` to say how many items to take.")


def _take_amount(matched: list[int], fraction: float | None, count: int | None, first_k: bool, seed: int) -> list[int]:
    """Pick ``fraction`` (rounded to nearest, at least one) or ``count`` of ``matched``, keeping their order."""
    if fraction is None and count is None:
        return matched
    n = len(matched)
    if count is not None:
        if count > n:
            raise ForgetSelectionError(f"`count={count}` is larger than the {n} item(s) that match the criteria.")
        k = int(count)
    else:
        k = min(n, max(1, math.floor(float(fraction) * n + 0.5)))  # type: ignore[arg-type]
    if first_k:
        return matched[:k]
    chosen = sorted(random.Random(seed).sample(range(n), k))
    return [matched[i] for i in chosen]


def _finish(forget_idx: list[int], total: int, what: str) -> tuple[list[int], list[int]]:
    if not forget_idx:
        raise ForgetSelectionError(f"the forget set is empty: no item matches {what}.")
    if len(forget_idx) == total:
        raise ForgetSelectionError(
            f"the forget set would contain all {total} item(s) ({what}), leaving nothing to remain; "
            "narrow the selection (e.g. with `fraction=`)."
        )
    chosen = set(forget_idx)
    return forget_idx, [i for i in range(total) if i not in chosen]


# ----------------------------------------------------------------------------------------------------------
# ids
# ----------------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------
def select_forget_indices(
    labels: Sequence[Any] | torch.Tensor | np.ndarray,
    *,
    label: Any = None,
    fraction: float | None = None,
    count: int | None = None,
    first_k: bool = False,
    seed: int = 0,
    num_classes: int | None = None,
) -> tuple[list[int], list[int]]:
    """Split a dataset known only by its labels into forget and remain indices.

    Args:
        labels: one label per item, in any form :func:`normalize_label` accepts; a ``(N,)`` tensor/array of
            class indices or an ``(N, C)`` one-hot tensor/array works too.
        label: the class, or a collection of classes, to forget. ``None`` with ``fraction``/``count`` picks a
            random subset of the whole dataset ("random forgetting").
        fraction: forget this fraction, in (0, 1], of the matching items (rounded to nearest, at least one).
        count: forget this many of the matching items instead of a fraction.
        first_k: take the first matching items in order instead of a seeded random choice.
        seed: seed of the random choice.
        num_classes: the model's number of classes; a requested label outside ``0..num_classes-1`` is an error.

    Returns:
        ``(forget_indices, remain_indices)``, both increasing, disjoint and together covering every index.

    Raises:
        ForgetSelectionError: on an empty dataset, no criterion, a bad ``fraction``/``count``, a label outside
            the model's classes, an item label that is not a class index, or when the forget set would be
            empty or would hold every item.
    """
    if isinstance(labels, (torch.Tensor, np.ndarray)):
        labels = list(labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels)
    total = len(labels)
    if total == 0:
        raise ForgetSelectionError("`labels` is empty: there is nothing to select from.")
    if label is None and fraction is None and count is None:
        raise ForgetSelectionError("no selection criterion given: pass `label=`, `fraction=` or `count=`.")
    _check_amount(fraction, count, first_k)
    if label is None:
        matched = list(range(total))
        what = "the whole dataset"
    else:
        wanted = _requested_labels(label, num_classes)
        matched = [i for i, item in enumerate(labels) if normalize_label(item) in wanted]
        what = f"label {sorted(wanted)}"
    if not matched:
        raise ForgetSelectionError(f"the forget set is empty: no item has {what}.")
    forget = _take_amount(matched, fraction, count, first_k, seed)
    return _finish(forget, total, what)


def select_forget(
    datalist: Sequence[Mapping[str, Any]],
    *,
    label: Any = None,
    fraction: float | None = None,
    count: int | None = None,
    first_k: bool = False,
    seed: int = 0,
    key: str | None = None,
    value: Any = None,
    predicate: Callable[[Mapping[str, Any]], bool] | None = None,
    ids: Iterable[Any] | None = None,
    ids_file: str | os.PathLike | None = None,
    id_key: str = "image",
    label_key: str = "label",
    num_classes: int | None = None,
    index: Iterable[int] | int | None = None,
    index_file: str | os.PathLike | None = None,
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Split a MONAI datalist into a forget list and a remain list.

    Every criterion given must hold for an item to be forgotten (logical AND): ``label``, ``key``/``value``,
    ``predicate`` and ``ids``/``ids_file``. ``fraction`` or ``count`` then keeps only part of the matching
    items (seeded random, or the first ones with ``first_k=True``); given alone, they pick from the whole
    datalist (random forgetting). Items are returned as the same objects, in datalist order.

    Values are compared leniently where types differ: an item value ``3`` matches a requested ``"3"`` and the
    other way round, which lets command-line selectors match numeric metadata. Ids are compared as strings,
    exactly or after ``os.path.normpath`` (so ``"./a/b.nii.gz"`` matches ``"a/b.nii.gz"``).

    Args:
        datalist: a sequence of dicts, as MONAI's ``load_decathlon_datalist`` returns.
        label: class index, or a collection of class indices, to forget. Item labels may be ints, numeric
            strings, one-element arrays/tensors or one-hot vectors.
        fraction: forget this fraction, in (0, 1], of the matching items (rounded to nearest, at least one).
        count: forget this many of the matching items instead of a fraction.
        first_k: take the first matching items instead of a seeded random choice.
        seed: seed of the random choice.
        key: a datalist key to match (``"device"``, ``"site"``, a DICOM tag name, ...); needs ``value``.
        value: the accepted value of ``key``, or a list/tuple/set of accepted values.
        predicate: a callable on the item; items for which it returns true match.
        ids: item ids (usually image paths) to forget, compared with ``item[id_key]``.
        ids_file: a file of ids, read with :func:`read_ids_file`.
        id_key: the datalist key that identifies an item.
        label_key: the datalist key holding the class label.
        num_classes: the model's number of classes; a requested label outside ``0..num_classes-1`` is an error.
        index: positions of the items to forget in ``datalist`` (0-based), for data without paths (in-memory
            datasets, ``NPZDictItemDataset``).
        index_file: a file of positions: one per line (``#`` comments) or a JSON list.

    Returns:
        ``(forget, remain)`` lists of datalist items.

    Raises:
        ForgetSelectionError: (a ``ValueError``) on an empty datalist; no criterion; ``key`` without
            ``value`` or the other way round; both ``ids`` and ``ids_file``; both ``fraction`` and ``count``;
            a ``fraction`` outside (0, 1]; a key that no item has (the message lists the keys that exist); a
            label outside the model's classes; ids that match no item (up to five are listed, with the count);
            positions outside the datalist, both ``index`` and ``index_file``; and when the forget set would be
            empty or would hold every item.
    """
    if isinstance(datalist, Mapping) or not isinstance(datalist, Sequence):
        raise ForgetSelectionError(
            f"`datalist` must be a sequence of dicts, got {type(datalist).__name__}; for a MONAI datalist file "
            "load it first (e.g. `monai.data.load_decathlon_datalist`)."
        )
    total = len(datalist)
    if total == 0:
        raise ForgetSelectionError("`datalist` is empty: there is nothing to select from.")
    for i, item in enumerate(datalist):
        if not isinstance(item, Mapping):
            raise ForgetSelectionError(f"datalist item {i} is a {type(item).__name__}, not a dict.")
    if (key is None) != (value is None):
        raise ForgetSelectionError("`key` and `value` go together: give both or neither.")
    if ids is not None and ids_file is not None:
        raise ForgetSelectionError("give either `ids` or `ids_file`, not both.")
    if predicate is not None and not callable(predicate):
        raise ForgetSelectionError(f"`predicate` must be callable, got {type(predicate).__name__}.")
    has_criterion = label is not None or key is not None or predicate is not None
    has_criterion = has_criterion or ids is not None or ids_file is not None
    has_criterion = has_criterion or index is not None or index_file is not None
    if not has_criterion and fraction is None and count is None:
        raise ForgetSelectionError(
            "no selection criterion given: pass at least one of `label=`, `key=`/`value=`, `predicate=`, "
            "`ids=`, `ids_file=`, `index=`, `index_file=`, or `fraction=`/`count=` for a random subset."
        )
    _check_amount(fraction, count, first_k)

    def require_key(name: str, role: str) -> None:
        if not any(name in item for item in datalist):
            present = sorted({str(k) for item in datalist for k in item})
            raise ForgetSelectionError(f"no datalist item has the {role} key {name!r}; keys present: {present}.")

    matches = [True] * total
    described: list[str] = []

    if label is not None:
        require_key(label_key, "label")
        wanted = _requested_labels(label, num_classes)
        for i, item in enumerate(datalist):
            if matches[i]:
                matches[i] = label_key in item and normalize_label(item[label_key]) in wanted
        described.append(f"{label_key} in {sorted(wanted)}")

    if key is not None:
        require_key(key, "selection")
        accepted = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        if not accepted:
            raise ForgetSelectionError("`value` is an empty collection; give at least one accepted value.")
        for i, item in enumerate(datalist):
            if matches[i]:
                matches[i] = key in item and any(_values_match(item[key], v) for v in accepted)
        described.append(f"{key} in {accepted!r}" if len(accepted) > 1 else f"{key} == {accepted[0]!r}")

    if predicate is not None:
        for i, item in enumerate(datalist):
            if matches[i]:
                matches[i] = bool(predicate(item))
        described.append(f"predicate {getattr(predicate, '__name__', repr(predicate))}")

    if ids is not None or ids_file is not None:
        require_key(id_key, "id")
        if ids_file is not None:
            requested = read_ids_file(ids_file, id_key=id_key)
            source = f"ids file {os.fspath(ids_file)!r}"
        else:
            if isinstance(ids, (str, bytes, os.PathLike)):
                ids = [ids]
            requested = [
                os.fspath(v) if isinstance(v, os.PathLike) else str(v) for v in ids  # type: ignore[union-attr]
            ]
            source = "`ids`"
        if not requested:
            raise ForgetSelectionError(f"{source} lists no ids.")
        by_form: dict[str, list[int]] = {}
        for i, item in enumerate(datalist):
            if id_key in item and isinstance(item[id_key], Hashable):
                for form in set(_id_forms(item[id_key])):
                    by_form.setdefault(form, []).append(i)
        hit: set[int] = set()
        missing = []
        for rid in requested:
            found = {i for form in set(_id_forms(rid)) for i in by_form.get(form, [])}
            if not found:
                missing.append(rid)
            hit |= found
        if missing:
            shown = ", ".join(repr(m) for m in missing[:_MAX_LISTED])
            more = f" (and {len(missing) - _MAX_LISTED} more)" if len(missing) > _MAX_LISTED else ""
            raise ForgetSelectionError(
                f"{len(missing)} of {len(requested)} id(s) from {source} match no datalist item by {id_key!r}: "
                f"{shown}{more}."
            )
        for i in range(total):
            matches[i] = matches[i] and i in hit
        described.append(f"{id_key} in {source}")

    if index is not None or index_file is not None:
        positions = read_positions(index, index_file, total)
        for i in range(total):
            matches[i] = matches[i] and i in positions
        described.append(f"position in {sorted(positions)[:_MAX_LISTED]}" + ("..." if len(positions) > _MAX_LISTED else ""))

    what = " and ".join(described) if described else "the whole datalist"
    matched = [i for i in range(total) if matches[i]]
    if not matched:
        raise ForgetSelectionError(f"the forget set is empty: no item matches {what}.")
    forget_idx = _take_amount(matched, fraction, count, first_k, seed)
    forget_idx, remain_idx = _finish(forget_idx, total, what)
    return [datalist[i] for i in forget_idx], [datalist[i] for i in remain_idx]


def read_positions(index: Iterable[int] | int | None, index_file: str | os.PathLike | None, total: int) -> set[int]:
    """The item positions named by ``index`` or by the lines (or JSON list) of ``index_file``.

    Raises:
        ForgetSelectionError: for both or neither given, a position that is not an integer or lies outside
            ``0..total-1``, or an empty list.
    """
    if (index is None) == (index_file is None):
        raise ForgetSelectionError("give either `index` or `index_file`.")
    source = "`index`"
    if index_file is not None:
        source = f"index file {os.fspath(index_file)!r}"
        try:
            with open(index_file, encoding="utf-8") as f:
                text = f.read()
        except OSError as error:
            raise ForgetSelectionError(f"cannot read the {source}: {error}") from None
        stripped = text.strip()
        if stripped.startswith("["):
            import json

            values: list[Any] = list(json.loads(stripped))
        else:
            values = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    else:
        values = [index] if isinstance(index, (int, str)) else list(index)  # type: ignore[arg-type]
    positions = set()
    for value in values:
        try:
            position = int(str(value).strip())
        except ValueError:
            raise ForgetSelectionError(f"{source} holds {value!r}, which is not an item position.") from None
        if not 0 <= position < total:
            raise ForgetSelectionError(f"{source} names position {position}, outside the datalist's 0..{total - 1}.")
        positions.add(position)
    if not positions:
        raise ForgetSelectionError(f"{source} names no positions.")
    return positions
