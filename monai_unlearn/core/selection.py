"""Choosing the forget set: split a MONAI datalist (or a sequence of labels) into forget and remain parts.

A forget set can be named by class (``label=3`` or ``label=[1, 4]``), by a fraction or a count of the items
that match (``fraction=0.1``, seeded random or the first ones in order), by any metadata key of the datalist
(``key="device", value="scannerA"``), by a predicate on the item, or by an explicit list of item ids, given
inline or read from a text or JSON file. Criteria that are given together must all hold (logical AND); the
fraction or count then picks among the items that satisfy them. The remain set is everything else, and both
parts keep the datalist's order.

:func:`parse_forget_selector` turns a short command-line string such as ``"label=3,fraction=0.1,seed=1"`` into
the keyword arguments of :func:`select_forget`.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "ForgetSelectionError",
    "normalize_label",
    "read_ids_file",
    "select_forget",
    "select_forget_indices",
    "parse_forget_selector",
]

_MAX_LISTED = 5


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

    Returns:
        ``(forget, remain)`` lists of datalist items.

    Raises:
        ForgetSelectionError: (a ``ValueError``) on an empty datalist; no criterion; ``key`` without
            ``value`` or the other way round; both ``ids`` and ``ids_file``; both ``fraction`` and ``count``;
            a ``fraction`` outside (0, 1]; a key that no item has (the message lists the keys that exist); a
            label outside the model's classes; ids that match no item (up to five are listed, with the count);
            and when the forget set would be empty or would hold every item.
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
    if not has_criterion and fraction is None and count is None:
        raise ForgetSelectionError(
            "no selection criterion given: pass at least one of `label=`, `key=`/`value=`, `predicate=`, "
            "`ids=`, `ids_file=`, or `fraction=`/`count=` for a random subset."
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

    what = " and ".join(described) if described else "the whole datalist"
    matched = [i for i in range(total) if matches[i]]
    if not matched:
        raise ForgetSelectionError(f"the forget set is empty: no item matches {what}.")
    forget_idx = _take_amount(matched, fraction, count, first_k, seed)
    forget_idx, remain_idx = _finish(forget_idx, total, what)
    return [datalist[i] for i in forget_idx], [datalist[i] for i in remain_idx]


_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


def _parse_bool(name: str, text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ForgetSelectionError(f"selector `{name}` expects true/false, got {text!r}.")


def _parse_int(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ForgetSelectionError(f"selector `{name}` expects an integer, got {text!r}.") from None


def parse_forget_selector(text: str) -> dict[str, Any]:
    """Parse a command-line forget selector into keyword arguments for :func:`select_forget`.

    Grammar::

        selector := "@" PATH                       ids file (text or JSON, see read_ids_file)
                  | PATH                           an existing file ending in .txt or .json: ids file
                  | pair ("," pair)*
        pair     := NAME "=" VALUE | "first_k"
        VALUE    := ALT ("|" ALT)*                 "|" separates accepted alternatives

    Reserved names and their types:

    - ``label``: integer class index, or alternatives ``label=1|4``;
    - ``fraction`` (float), ``count`` (int), ``seed`` (int), ``num_classes`` (int);
    - ``first_k``: true/false/yes/no/1/0, or a bare ``first_k`` meaning true;
    - ``ids``: inline ids, ``ids=a.nii.gz|b.nii.gz``; ``ids_file``: a path;
    - ``id_key``, ``label_key``: datalist keys.

    Any other ``NAME=VALUE`` selects items whose ``NAME`` equals ``VALUE`` (at most one such pair; use
    ``|`` for several accepted values). Values are kept as strings; matching lets ``"3"`` equal an item value
    ``3``. Whitespace around names and values is ignored.

    Examples: ``"label=3"``, ``"label=3,fraction=0.1,seed=1"``, ``"device=scannerA|scannerB"``,
    ``"@forget_ids.txt"``, ``"site=2,count=5,first_k"``.

    Args:
        text: the selector string.

    Returns:
        a dict of keyword arguments for :func:`select_forget`.

    Raises:
        ForgetSelectionError: on an empty selector, a pair without ``=``, an empty name or value, a name given
            twice, a value of the wrong type, or more than one metadata key.
    """
    if not isinstance(text, str) or not text.strip():
        raise ForgetSelectionError("the forget selector is empty; e.g. 'label=3' or 'device=scannerA' or '@ids.txt'.")
    text = text.strip()
    if text.startswith("@"):
        path = text[1:].strip()
        if not path:
            raise ForgetSelectionError("selector '@' needs a file path after it, e.g. '@forget_ids.txt'.")
        return {"ids_file": path}
    if text.lower().endswith((".txt", ".json")) and os.path.isfile(text):
        return {"ids_file": text}

    result: dict[str, Any] = {}
    for raw in text.split(","):
        token = raw.strip()
        if not token:
            raise ForgetSelectionError(f"selector {text!r} has an empty element (two commas in a row?).")
        if "=" not in token:
            if token == "first_k":
                name, val = "first_k", "true"
            else:
                raise ForgetSelectionError(f"selector element {token!r} is not of the form name=value.")
        else:
            name, val = (part.strip() for part in token.split("=", 1))
        if not name:
            raise ForgetSelectionError(f"selector element {token!r} has no name before '='.")
        if not val:
            raise ForgetSelectionError(f"selector element {token!r} has no value after '='.")
        dest = name
        if name not in {
            "label",
            "fraction",
            "count",
            "seed",
            "num_classes",
            "first_k",
            "ids",
            "ids_file",
            "id_key",
            "label_key",
        }:
            if "key" in result:
                raise ForgetSelectionError(
                    f"selector {text!r} names more than one metadata key ({result['key']!r} and {name!r}); "
                    "only one is supported, use a `predicate` in Python for more."
                )
            result["key"] = name
            alts = [a.strip() for a in val.split("|")]
            result["value"] = alts if len(alts) > 1 else alts[0]
            continue
        if dest in result:
            raise ForgetSelectionError(f"selector {text!r} gives {name!r} more than once.")
        if name == "label":
            alts = [_parse_int("label", a) for a in val.split("|")]
            result["label"] = alts if len(alts) > 1 else alts[0]
        elif name == "fraction":
            number = _to_number(val)
            if number is None:
                raise ForgetSelectionError(f"selector `fraction` expects a number, got {val!r}.")
            result["fraction"] = float(number)
        elif name in ("count", "seed", "num_classes"):
            result[name] = _parse_int(name, val)
        elif name == "first_k":
            result["first_k"] = _parse_bool(name, val)
        elif name == "ids":
            result["ids"] = [a.strip() for a in val.split("|") if a.strip()]
        else:  # ids_file, id_key, label_key
            result[name] = val
    return result
