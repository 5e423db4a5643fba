"""The new bundle of an unlearning run: its record, audit, changelog, TorchScript and report files."""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any


import monai_unlearn
from monai_unlearn.bundle.audit import build_audit
from monai_unlearn.bundle.audit_report import write_audit_markdown
from monai_unlearn.bundle.layout import find_bundle_config
from monai_unlearn.bundle.settings import REPORT_DIR, setting
from monai_unlearn.bundle.writer import export_torchscript, write_new_bundle
from monai_unlearn.distributed import barrier, is_writer
from monai_unlearn.io import atomic_write_json
from monai_unlearn.metrics.headline import format_table, headline_rows
from monai_unlearn.metrics.plots import LOSS_SERIES, curves_figure, has_matplotlib, per_class_figure, write_png
from monai_unlearn.result import run_result

__all__ = ["write_unlearned_bundle"]

logger = logging.getLogger(__name__)


def write_unlearned_bundle(request: Any, trainer: Any, history: Any, metrics: Any) -> dict[str, Any]:
    """Write the new bundle at ``request.output_dir``: configs copied with a bumped version and changelog entry,
    ``models/model.pt``, ``models/model.ts``, and ``unlearning/`` with the report (JSON, PNG, Markdown) and the
    audit record. Under torchrun only rank 0 writes; the others wait until the bundle is complete. The folder is
    assembled beside ``output_dir`` and moved into place: it is complete or absent.

    Args:
        request: the run's ``UnlearningRequest``.
        trainer: the ``UnlearningTrainer`` after ``run()``.
        history: its ``UnlearningHistoryHandler``.
        metrics: its ``UnlearningMetricsHandler`` (evaluation before and after).

    Returns:
        a summary: output folder, numbers of forgotten and kept items, the table, the report record.
    """
    stopping = None if request.stopping is None else {**request.stopping, **request.calibrated.record}
    result = run_result(trainer, history, metrics, stopping)
    revised = request.network
    segmentation = request.task == "segmentation"
    forget_items, forget_classes = request.forget_items, request.forget_classes
    record = result.to_dict()
    record.update(
        selector=request.selector, num_forgotten=len(forget_items), num_remain=len(request.remain_items),
        source_bundle=request.bundle_root, layout=request.layout.to_dict(),
        monai_unlearn_version=monai_unlearn.__version__, task=request.task, task_reason=request.task_reason,
        forget_classes=forget_classes, skipped_items=request.skipped_items, training_data=request.datalist_source,
        forgotten_items=request.item_records(forget_items),
    )
    headline = {name: headline_rows(record[name]) for name in ("before", "after", "retrained") if record.get(name)}
    audit_params = {"method": result.method, "config": result.config, "optimizer": result.optimizer,
                    "epochs": result.epochs, "time_s": result.time_s}
    if stopping is not None:  # which regime, why, and the target it stopped at
        audit_params["regime"] = {"decision": stopping["regime"], "target": stopping["calibration"]["target"],
                                  "stopped": stopping.get("stopped"), "rewound": stopping.get("rewound")}
    audit_kwargs: dict[str, Any] = {}
    if segmentation:
        audit_params.update(task="segmentation", forget_classes=forget_classes)
        # labels are label-map paths: never list them in clear; count the forgotten items by case and device
        audit_kwargs = dict(label_key="forget_class", group_keys=("device", "site", "manufacturer", "case"))
    positions = [request.positions.get(id(item)) for item in forget_items]
    labels = None if request.labels is None else [request.labels.get(id(item)) for item in forget_items]
    audit = build_audit(forget_items, request.selector, audit_params, headline,
                        reason=str(setting(request.parser, "unlearn_reason")), positions=positions, labels=labels,
                        **audit_kwargs)
    config = trainer.unlearner.config
    what = (f"label class(es) {forget_classes} forgotten voxel by voxel in {len(forget_items)} training items"
            if forget_classes else f"{len(forget_items)} training items forgotten")
    changelog = (
        f"unlearned with {result.method} (monai_unlearn {monai_unlearn.__version__}): {what} "
        f"(selector {request.selector!r}); eps={config.eps} ({config.eps_mode}), steps={config.num_steps}, "
        f"gamma={config.gamma}, lambda={config.lam}, phi={config.phi}, epochs={result.epochs}"
    )
    example = next(iter(request.loader(_one_item_dataset(request), sharded=False)))["image"]
    class_names = setting(request.parser, "unlearn_class_names")
    output_dir, bundle_root = request.output_dir, request.bundle_root

    def write_extras(root: str, meta: dict[str, Any]) -> None:
        configs = {n: p for n in ("inference",) if (p := find_bundle_config(root, n)) is not None}
        export_torchscript(revised.cpu(), os.path.join(root, "models", "model.ts"), meta, configs, example.cpu())
        report_dir = os.path.join(root, REPORT_DIR)
        os.makedirs(report_dir, exist_ok=True)
        atomic_write_json(record, os.path.join(report_dir, "report.json"))
        atomic_write_json(audit, os.path.join(report_dir, "audit.json"))
        if has_matplotlib and result.history:
            write_png(curves_figure(result.history, "epoch", LOSS_SERIES, title="unlearning passes", unit_range=False),
                      os.path.join(report_dir, "curves.png"))
        per_class = "per_class_dice.png" if segmentation else "per_class_accuracy.png"
        if has_matplotlib and result.before and result.after:
            write_png(per_class_figure(result.before, result.after, class_names, **(
                {"metric": "Dice"} if segmentation else {})), os.path.join(report_dir, per_class))
        reproduce = (f"python -m monai_unlearn unlearn --bundle {bundle_root} --forget '{request.selector}' "
                     f"--output <new folder> --epochs {result.epochs} --set 'unlearn_params={json.dumps(config.to_dict())}'")
        verify = f"python -m monai_unlearn verify --unlearned {os.path.abspath(output_dir)} --original {bundle_root}"
        write_audit_markdown(report_dir, record, audit, meta, reproduce, verify_command=verify, per_class_png=per_class)

    if is_writer():  # under torchrun only rank 0 writes; the others wait until the bundle is complete
        write_new_bundle(bundle_root, output_dir, revised.state_dict(), changelog, write_extras,
                         overwrite=bool(request.overwrite))
        if request.checkpoint_dir is not None:  # the bundle is complete: its checkpoint is no longer needed
            shutil.rmtree(request.checkpoint_dir, ignore_errors=True)
    barrier()
    table = format_table(headline)
    logger.info("unlearned bundle written to %s\n%s", output_dir, table)
    return {"output_dir": os.path.abspath(output_dir), "num_forgotten": len(forget_items),
            "num_remain": len(request.remain_items), "table": table, "record": record}


def _one_item_dataset(request: Any) -> Any:
    from monai.data import Dataset

    return Dataset(request.forget_items[:1], request.transform)
