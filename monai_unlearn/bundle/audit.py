"""The audit record of what was forgotten: hashes, counts, parameters and evidence."""

from __future__ import annotations

import hashlib
import numbers
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from monai_unlearn.bundle.datalist import item_content_sha256, item_path

__all__ = ["sha256_file", "sha256_text", "forgotten_item_record", "build_audit"]


def sha256_text(text: str) -> str:
    """Hex SHA-256 of a UTF-8 string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def forgotten_item_record(
    item: Mapping[str, Any], id_key: str = "image", label_key: str = "label", index: int | None = None,
    label: Any = None,
) -> dict[str, Any]:
    """Hashes of one forgotten item's identifier (its path) and of its file's content.

    Identifiers are stored hashed, not in clear, so the audit file itself does not disclose a withdrawn
    patient's file names; whoever holds a path can verify it against ``id_sha256``. An item without a path (an
    in-memory dataset's arrays) is identified by its content: ``id_sha256`` and ``content_sha256`` are then the
    SHA-256 of its arrays (``item_content_sha256``). ``index`` (its position in the training data) and ``label``
    (a class made by the bundle's transforms) are recorded when given.
    """
    if item_path(item, id_key) is None:
        digest = item_content_sha256(item)
        record = {"id_sha256": digest, "content_sha256": digest}
        if index is not None:
            record["index"] = index
        if label is not None:
            record["label"] = label
        return record
    identifier = item.get(id_key)
    paths = identifier if isinstance(identifier, (list, tuple)) else [identifier]
    record: dict[str, Any] = {"id_sha256": sha256_text(str(identifier))}
    contents = [sha256_file(p) if isinstance(p, str) and os.path.isfile(p) else None for p in paths]
    record["content_sha256"] = contents[0] if len(contents) == 1 else contents
    if index is not None:
        record["index"] = index
    if label is not None:
        record["label"] = label
    elif label_key in item and not isinstance(item[label_key], str):
        record["label"] = item[label_key]
    return record


def build_audit(
    forget_items: Sequence[Mapping[str, Any]],
    selector: str,
    parameters: Mapping[str, Any],
    metrics: Mapping[str, Any] | None,
    reason: str = "",
    id_key: str = "image",
    label_key: str = "label",
    group_keys: Sequence[str] = ("device", "site", "manufacturer", "class_name"),
    positions: Sequence[int | None] | None = None,
    labels: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """The audit record of an unlearning run.

    Args:
        forget_items: the datalist entries that were forgotten.
        selector: the forget selector as the user gave it.
        parameters: method and optimiser parameters.
        metrics: headline metrics before/after (and of the retrained model when known).
        reason: free text saying why the data was forgotten.
        id_key: the entry key that identifies an item (its image path).
        label_key: the entry key of the label.
        group_keys: metadata keys to count the forgotten items by, when present.
        positions: each item's position in the training data (recorded as ``index``).
        labels: each item's class as the bundle's transforms make it, when the items' own labels are not classes.

    Returns:
        a JSON-serialisable dictionary.
    """
    counts: dict[str, dict[str, int]] = {}
    for key in (label_key, *group_keys):
        if key == label_key and labels is not None:
            values = [str(label) for label in labels if label is not None]
        else:
            values = [str(item[key]) for item in forget_items
                      if key in item and isinstance(item[key], (str, bool, numbers.Number))]
        if values:
            counts[key] = dict(Counter(values))
    positions = list(positions) if positions is not None else [None] * len(forget_items)
    labels = list(labels) if labels is not None else [None] * len(forget_items)
    return {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reason": reason,
        "selector": selector,
        "num_forgotten": len(forget_items),
        "counts": counts,
        "items": [forgotten_item_record(item, id_key, label_key, index, label)
                  for item, index, label in zip(forget_items, positions, labels)],
        "parameters": dict(parameters),
        "metrics": dict(metrics) if metrics is not None else None,
    }
