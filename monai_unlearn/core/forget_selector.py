"""The command-line forget selector: ``"label=3,fraction=0.1,seed=1"`` into ``select_forget`` keyword arguments."""

from __future__ import annotations

import os
from typing import Any

from monai_unlearn.core.datalist_values import ForgetSelectionError, _to_number

__all__ = ["parse_forget_selector"]


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
    - ``id_key``, ``label_key``: datalist keys;
    - ``index``: item positions (0-based) for data without paths, ``index=3,7,12`` or ``index=3|7|12``;
      ``index_file``: a file of positions (one per line, or a JSON list).

    Any other ``NAME=VALUE`` selects items whose ``NAME`` equals ``VALUE`` (at most one such pair; use
    ``|`` for several accepted values). Values are kept as strings; matching lets ``"3"`` equal an item value
    ``3``. Whitespace around names and values is ignored.

    Examples: ``"label=3"``, ``"label=3,fraction=0.1,seed=1"``, ``"device=scannerA|scannerB"``,
    ``"@forget_ids.txt"``, ``"site=2,count=5,first_k"``, ``"index=3,7,12"``.

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
    previous = None
    for raw in text.split(","):
        token = raw.strip()
        if not token:
            raise ForgetSelectionError(f"selector {text!r} has an empty element (two commas in a row?).")
        if "=" not in token and previous == "index" and token != "first_k":  # index=3,7,12: more positions
            result["index"].append(_parse_int("index", token))
            continue
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
        previous = name
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
            "index",
            "index_file",
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
        elif name == "index":
            result["index"] = [_parse_int("index", a) for a in val.split("|")]
        else:  # ids_file, id_key, label_key
            result[name] = val
    return result
