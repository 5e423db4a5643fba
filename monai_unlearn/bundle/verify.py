"""Independent check of an unlearned bundle: recompute its forget set and its evidence from the two bundles."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.transforms import Compose

from monai_unlearn.bundle.audit import sha256_text
from monai_unlearn.bundle.compose import bundle_network
from monai_unlearn.bundle.layout import detect_layout, find_bundle_config
from monai_unlearn.bundle.datalist import datalist_items, item_content_sha256, item_path
from monai_unlearn.bundle.forget_items import has_class_labels, select_bundle_items, transformed_labels
from monai_unlearn.bundle.settings import REPORT_DIR
from monai_unlearn.metrics.evaluation import evaluate_unlearning

__all__ = ["verify_unlearned_bundle"]

def _train_config(root: str) -> str:
    path = find_bundle_config(root, "train")
    if path is None:
        raise FileNotFoundError(f"{root}/configs has no training config (train.json / .yaml / .yml).")
    return path


def _id_hash(item: Mapping[str, Any]) -> str:
    """The item's ``id_sha256`` as the audit records it: its path hashed (without reading the file), or the hash
    of an in-memory item's arrays."""
    return sha256_text(str(item.get("image"))) if item_path(item) is not None else item_content_sha256(item)


def verify_unlearned_bundle(
    unlearned: str, original: str | None = None, overrides: Mapping[str, Any] | None = None,
    batch_size: int = 16, mia_tolerance: float = 0.01,
) -> dict[str, Any]:
    """Recompute what an unlearned bundle's report claims, from the original and the unlearned bundle.

    Checks that the selector recorded in the report still selects exactly the items listed (hashed) in the audit,
    and, for classifiers, that the original and the unlearned weights give the recorded forget / remain / test
    accuracies (exactly: evaluation is deterministic) and membership-inference scores (within ``mia_tolerance``).

    Args:
        unlearned: the bundle written by the unlearn command.
        original: the source bundle (default: the path recorded in the report).
        overrides: config overrides the original run used (e.g. ``{"dataset_dir": ...}``).
        batch_size: evaluation batch size.
        mia_tolerance: allowed difference of the membership-inference scores (the score does not depend on the
            order of the samples, but float noise between batchings can move a fold by one sample).

    Returns:
        ``{"ok": bool, "checks": [{"check", "recorded", "recomputed", "ok"}, ...]}``.
    """
    with open(os.path.join(unlearned, REPORT_DIR, "report.json")) as f:
        record = json.load(f)
    with open(os.path.join(unlearned, REPORT_DIR, "audit.json")) as f:
        audit = json.load(f)
    original = os.path.abspath(original or record["source_bundle"])
    parser = ConfigParser()
    parser.read_config(_train_config(original))
    parser["bundle_root"] = original
    for key, value in (overrides or {}).items():
        parser[key] = value
    layout = detect_layout(parser, {k: v for k, v in (record.get("layout") or {}).items() if v})
    data = datalist_items(parser.get_parsed_content(layout.datalist), layout.datalist)
    datalist = data.items
    task = record.get("task", "classification")
    transform = Compose([]) if data.transformed else parser.get_parsed_content(layout.preprocessing)
    labels = None
    if task == "classification" and not has_class_labels(datalist):
        labels = transformed_labels(datalist, transform)
    forget, remain, _, _ = select_bundle_items(datalist, record["selector"], task, None, labels)
    skipped = {s["id_sha256"] for s in record.get("skipped_items") or []}

    def usable(items: list) -> list:  # items skipped as unreadable were not part of the run
        return [item for item in items if _id_hash(item) not in skipped] if skipped else items

    forget, remain = usable(forget), usable(remain)
    hashes = [_id_hash(item) for item in forget]
    checks = [{"check": "forgotten items (id hashes, in order)", "recorded": len(audit["items"]),
               "recomputed": len(hashes), "ok": hashes == [i["id_sha256"] for i in audit["items"]]}]

    if record.get("task", "classification") == "classification" and record.get("before") and record.get("after"):

        def loader(items: list) -> DataLoader:
            return DataLoader(Dataset(items, transform), batch_size=batch_size)

        val = (usable(datalist_items(parser.get_parsed_content(layout.val_datalist), layout.val_datalist).items)
               if layout.val_datalist else [])
        loaders = (loader(forget), loader(remain), loader(val) if val else None)
        for name, root in (("before", original), ("after", unlearned)):
            evaluation = evaluate_unlearning(bundle_network(root).eval(), *loaders)
            for split in ("forget", "remain", "test"):
                recorded = (record[name].get(split) or {}).get("accuracy")
                recomputed = (evaluation.get(split) or {}).get("accuracy")
                if recorded is not None:
                    checks.append({"check": f"{name} {split} accuracy", "recorded": recorded, "recomputed": recomputed,
                                   "ok": recomputed is not None and abs(recorded - recomputed) < 1e-9})
            if record[name].get("mia") and evaluation.get("mia"):
                recorded, recomputed = record[name]["mia"]["mean"], evaluation["mia"]["mean"]
                checks.append({"check": f"{name} MIA", "recorded": recorded, "recomputed": recomputed,
                               "ok": abs(recorded - recomputed) <= mia_tolerance})
    return {"ok": all(c["ok"] for c in checks), "checks": checks}
