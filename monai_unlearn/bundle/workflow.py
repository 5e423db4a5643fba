"""Unlearning from an existing bundle: read its parts, run PSG, write a new bundle with report and audit."""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
from collections.abc import Mapping
from typing import Any

import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import DataLoader, Dataset

import monai_unlearn
from monai_unlearn.bundle.audit import build_audit
from monai_unlearn.bundle.audit_report import write_audit_markdown
from monai_unlearn.bundle.checkpoint import load_bundle_weights
from monai_unlearn.bundle.inputs import ShapeCheck, screen_items
from monai_unlearn.bundle.layout import detect_layout, find_bundle_config
from monai_unlearn.bundle.writer import export_torchscript, write_new_bundle
from monai_unlearn.io import atomic_write_json
from monai_unlearn.core.config import PSGConfig
from monai_unlearn.core.selection import parse_forget_selector, select_forget
from monai_unlearn.distributed import barrier, distributed_sampler, is_distributed, is_writer, rank_device
from monai_unlearn.metrics.plots import LOSS_SERIES, curves_figure, has_matplotlib, per_class_figure, write_png
from monai_unlearn.metrics.segmentation import evaluate_segmentation
from monai_unlearn.runner import format_table, headline_rows, unlearn

__all__ = ["DEFAULT_SETTINGS", "is_segmentation_datalist", "select_segmentation_forget", "unlearn_from_parser", "unlearn_running_bundle", "UnlearnWorkflow", "calling_config_parser"]

logger = logging.getLogger(__name__)

# Settings read from the merged config (override any on the command line: `--unlearn_epochs 5`).
DEFAULT_SETTINGS: dict[str, Any] = {
    "forget": None,  # the forget selector: a label, `key=value`, or a file of ids
    "output_dir": None,  # where the new bundle is written (must not exist unless unlearn_overwrite)
    "unlearn_reason": "",  # free text recorded in the audit
    "unlearn_overwrite": False,
    "unlearn_params": {"eps": 0.2, "eps_mode": "relative", "phi": 4.0, "seed": 0},  # PSGConfig arguments
    "unlearn_epochs": 15,
    "unlearn_lr": 0.001,
    "unlearn_momentum": 0.9,
    "unlearn_batch_size": 16,  # per process under torchrun (the multi_gpu_unlearn overlay)
    "unlearn_shuffle": True,  # shuffle the forget and remain sets each pass, seeded by unlearn_params#seed
    "unlearn_num_workers": 0,
    "unlearn_amp": False,  # mixed precision on CUDA (ignored on CPU)
    "unlearn_channels_last": False,  # channels_last memory format for 2D images (GPU speed; same numbers)
    "unlearn_keys": {},  # config ids of the bundle's parts, when detection needs help (see layout.KEY_CANDIDATES)
    "unlearn_ckpt": None,  # default: <bundle_root>/models/model.pt
    "unlearn_retrained_ckpt": None,  # optional weights of a model retrained without the forget set
    "unlearn_stop_at_forget_accuracy": None,
    "unlearn_progress": True,
    "unlearn_class_names": None,
    # segmentation bundles (datalist labels are label-map paths)
    "unlearn_checkpoint_every": None,  # write <output_dir>.checkpoint every N passes (removed once the bundle is written)
    "unlearn_resume": False,  # continue an interrupted run from <output_dir>.checkpoint
    "unlearn_screen_inputs": "stop",  # unreadable / non-finite items: "stop" the run, "skip" and report them, or "off"
    "unlearn_roi_size": None,  # sliding-window ROI of the Dice evaluation; default: the bundle's SlidingWindowInferer
    "unlearn_patch_size": None,  # random crops of this size for the unlearning steps (patch-based); None: whole images
    "unlearn_include_background": False,  # count class 0 in the headline Dice
}
REPORT_DIR = "unlearning"


def _setting(parser: ConfigParser, key: str) -> Any:
    if key not in parser:
        return DEFAULT_SETTINGS[key]
    value = parser.get_parsed_content(key)
    if isinstance(DEFAULT_SETTINGS[key], Mapping) and isinstance(value, Mapping):
        return {**DEFAULT_SETTINGS[key], **value}
    if isinstance(DEFAULT_SETTINGS[key], bool) and isinstance(value, str):
        return _as_bool(key, value)
    return DEFAULT_SETTINGS[key] if value is None else value


def _as_bool(key: str, text: str) -> bool:
    """Command lines pass ``--unlearn_overwrite false`` as a string: read it as a flag, never as ``bool(text)``."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"{key} must be true or false, got {text!r}.")


def _selector_text(forget: Any) -> str:
    if isinstance(forget, bool) or forget is None:
        raise ValueError("no forget set given: pass `--forget <label | key=value | ids file>`.")
    if isinstance(forget, (int, float)):
        return f"label={int(forget)}"
    return str(forget)


def unlearn_from_parser(parser: ConfigParser) -> dict[str, Any]:
    """Run unlearning on the bundle whose merged configuration ``parser`` holds, and write the new bundle.

    The wrapped bundle is only read: its network, deterministic preprocessing, training datalist and device are
    taken from its config, its weights from ``models/model.pt`` (``weights_only=True``); none of its trainers,
    handlers or savers is built. The new bundle at ``output_dir`` gets the copied configs with a bumped
    version and changelog entry, ``models/model.pt``, ``models/model.ts``, and ``unlearning/`` with the report
    (JSON and PNG) and the audit record.

    Args:
        parser: the merged config (wrapped bundle + unlearn overlay + command-line overrides).

    Returns:
        a summary: output folder, numbers of forgotten and kept items, the report record.

    Raises:
        ValueError: for a missing forget selector or output folder, a bad selection, a checkpoint that does not
            fit, a datalist that is not a list of dicts, or a bundle layout that cannot be understood.
        FileNotFoundError: when the weights are missing.
        FileExistsError: when ``output_dir`` exists and ``unlearn_overwrite`` is false.
    """
    selector = _selector_text(_setting(parser, "forget"))
    output_dir = _setting(parser, "output_dir")
    if not output_dir:
        raise ValueError("no output folder given: pass `--output_dir <new bundle folder>`.")
    bundle_root = os.path.abspath(str(parser.get("bundle_root", ".")))
    if os.path.exists(output_dir) and not _setting(parser, "unlearn_overwrite"):
        raise FileExistsError(f"{output_dir} already exists; choose a new folder or pass `--unlearn_overwrite true`.")
    layout = detect_layout(parser, _setting(parser, "unlearn_keys"))
    device = rank_device(parser.get_parsed_content(layout.device) if layout.device else "cpu")

    datalist = parser.get_parsed_content(layout.datalist)
    if not isinstance(datalist, (list, tuple)) or not all(isinstance(d, Mapping) for d in datalist):
        raise ValueError(f"the training datalist at config id {layout.datalist!r} is not a list of dicts.")
    num_classes = parser.get("num_classes") if isinstance(parser.get("num_classes"), int) else None
    segmentation = is_segmentation_datalist(datalist)
    forget_classes: list[int] | None = None
    remain_ignore = True
    if segmentation:
        forget_items, remain_items, forget_classes, remain_ignore = select_segmentation_forget(
            list(datalist), selector, num_classes)
    else:
        forget_items, remain_items = select_forget(list(datalist), **parse_forget_selector(selector), num_classes=num_classes)
    logger.info("forgetting %s of %d training items (selector %r)",
                f"class(es) {forget_classes} in {len(forget_items)}" if forget_classes else len(forget_items),
                len(datalist), selector)

    network = parser.get_parsed_content(layout.network, lazy=False)
    ckpt = _setting(parser, "unlearn_ckpt") or os.path.join(bundle_root, "models", "model.pt")
    load_bundle_weights(network, ckpt, device)
    network.to(device)
    retrained = None
    retrained_ckpt = _setting(parser, "unlearn_retrained_ckpt")
    if retrained_ckpt:
        retrained = load_bundle_weights(parser.get_parsed_content(layout.network, lazy=False), retrained_ckpt, device)

    transform = parser.get_parsed_content(layout.preprocessing)
    batch_size = int(_setting(parser, "unlearn_batch_size"))
    workers = int(_setting(parser, "unlearn_num_workers"))

    patch_size = _setting(parser, "unlearn_patch_size") if segmentation else None
    step_transform = transform
    if patch_size:
        from monai.transforms import Compose, RandSpatialCropd

        step_transform = Compose([transform, RandSpatialCropd(keys=["image", "label"], roi_size=patch_size,
                                                              random_size=False)])

    policy = str(_setting(parser, "unlearn_screen_inputs"))
    def probe(image: torch.Tensor) -> None:
        was_training = network.training
        network.eval()
        try:
            with torch.no_grad():
                network(image.to(device))
        finally:
            network.train(was_training)

    shapes = ShapeCheck(probe, match="channels" if segmentation else "shape")
    forget_items, skipped = screen_items(forget_items, transform, policy, "forget", shapes=shapes)
    remain_items, skipped_remain = screen_items(remain_items, transform, policy, "remain", shapes=shapes)
    skipped += skipped_remain
    if not forget_items:
        raise ValueError("every forget item was skipped as unreadable: there is nothing left to unlearn.")

    config = PSGConfig(**dict(_setting(parser, "unlearn_params")))
    shuffle_steps = bool(_setting(parser, "unlearn_shuffle"))
    shuffle_seed = config.seed or 0

    def loader(items: list, steps: bool = False, sharded: bool = True) -> DataLoader:
        """Step loaders shuffle; under torchrun every loader is sharded (evenly for steps, so ranks keep in step)."""
        dataset = Dataset(items, step_transform if steps else transform)
        shuffle = shuffle_steps and steps
        if sharded and is_distributed():
            sampler = distributed_sampler(dataset, shuffle=shuffle, even=steps, seed=shuffle_seed)
            return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
        generator = torch.Generator().manual_seed(shuffle_seed) if shuffle else None  # same seed, same order
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=generator)

    test_loader = None
    if layout.val_datalist:
        val_items = parser.get_parsed_content(layout.val_datalist)
        val_items, skipped_val = screen_items(list(val_items or []), transform, policy, "validation", shapes=shapes)
        skipped += skipped_val
        test_loader = loader(val_items) if val_items else None

    evaluate_fn = None
    segmentation_kwargs: dict[str, Any] = {}
    if segmentation:
        roi_size = _setting(parser, "unlearn_roi_size") or _sliding_window_roi(parser, layout.inferer)
        # whole images for evaluation; in class mode the forget and remain items are the same cases
        eval_forget = loader(forget_items)
        eval_remain = None if remain_items is forget_items else loader(remain_items)
        include_background = bool(_setting(parser, "unlearn_include_background"))

        def evaluate_fn(net: torch.nn.Module) -> dict[str, Any]:
            return evaluate_segmentation(net, eval_forget, eval_remain, test_loader, num_classes, device,
                                         forget_classes=forget_classes, include_background=include_background,
                                         roi_size=roi_size)

        segmentation_kwargs = dict(task="segmentation", forget_classes=forget_classes,
                                   remain_ignore_forget_classes=remain_ignore, evaluate_fn=evaluate_fn,
                                   roi_size=roi_size)
    checkpoint_every = _setting(parser, "unlearn_checkpoint_every")
    resume = _setting(parser, "unlearn_resume")
    checkpoint_dir = os.path.abspath(output_dir) + ".checkpoint" if (checkpoint_every or resume) else None
    checkpointing = {"checkpoint_dir": checkpoint_dir, "checkpoint_every": int(checkpoint_every or 1), "resume": resume}
    revised, result = unlearn(
        network, loader(forget_items, steps=True), loader(remain_items, steps=True), config=config,
        epochs=int(_setting(parser, "unlearn_epochs")), lr=float(_setting(parser, "unlearn_lr")),
        momentum=float(_setting(parser, "unlearn_momentum")), device=device, num_classes=num_classes,
        test_loader=test_loader, retrained_model=retrained,
        stop_at_forget_accuracy=_setting(parser, "unlearn_stop_at_forget_accuracy"),
        progress=bool(_setting(parser, "unlearn_progress")), amp=bool(_setting(parser, "unlearn_amp")),
        channels_last=bool(_setting(parser, "unlearn_channels_last")), **segmentation_kwargs, **checkpointing,
    )
    record = result.to_dict()
    record.update(
        selector=selector, num_forgotten=len(forget_items), num_remain=len(remain_items),
        source_bundle=bundle_root, layout=layout.to_dict(), monai_unlearn_version=monai_unlearn.__version__,
        task="segmentation" if segmentation else "classification", forget_classes=forget_classes,
        skipped_items=skipped,
    )
    headline = {name: headline_rows(record[name]) for name in ("before", "after", "retrained") if record.get(name)}
    audit_params = {"method": result.method, "config": result.config, "optimizer": result.optimizer,
                    "epochs": result.epochs, "time_s": result.time_s}
    audit_kwargs: dict[str, Any] = {}
    if segmentation:
        audit_params.update(task="segmentation", forget_classes=forget_classes)
        # labels are label-map paths: never list them in clear; count the forgotten items by case and device
        audit_kwargs = dict(label_key="forget_class", group_keys=("device", "site", "manufacturer", "case"))
    audit = build_audit(forget_items, selector, audit_params, headline, reason=str(_setting(parser, "unlearn_reason")),
                        **audit_kwargs)
    what = (f"label class(es) {forget_classes} forgotten voxel by voxel in {len(forget_items)} training items"
            if forget_classes else f"{len(forget_items)} training items forgotten")
    changelog = (
        f"unlearned with {result.method} (monai_unlearn {monai_unlearn.__version__}): {what} "
        f"(selector {selector!r}); eps={config.eps} ({config.eps_mode}), steps={config.num_steps}, "
        f"gamma={config.gamma}, lambda={config.lam}, phi={config.phi}, epochs={result.epochs}"
    )
    example = next(iter(loader(forget_items[:1], sharded=False)))["image"]
    class_names = _setting(parser, "unlearn_class_names")

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
        if has_matplotlib and result.before and result.after:
            if segmentation:
                write_png(per_class_figure(result.before, result.after, class_names, metric="Dice"),
                          os.path.join(report_dir, "per_class_dice.png"))
            else:
                write_png(per_class_figure(result.before, result.after, class_names),
                          os.path.join(report_dir, "per_class_accuracy.png"))
        reproduce = (f"python -m monai_unlearn unlearn --bundle {bundle_root} --forget '{selector}' "
                     f"--output <new folder> --epochs {result.epochs} --set 'unlearn_params={json.dumps(config.to_dict())}'")
        verify = f"python -m monai_unlearn verify --unlearned {os.path.abspath(output_dir)} --original {bundle_root}"
        write_audit_markdown(report_dir, record, audit, meta, reproduce, verify_command=verify,
                             per_class_png="per_class_dice.png" if segmentation else "per_class_accuracy.png")

    if is_writer():  # under torchrun only rank 0 writes; the others wait until the bundle is complete
        write_new_bundle(bundle_root, output_dir, revised.state_dict(), changelog, write_extras,
                         overwrite=bool(_setting(parser, "unlearn_overwrite")))
        if checkpoint_dir is not None:  # the bundle is complete: its checkpoint is no longer needed
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    barrier()
    table = format_table(headline)
    logger.info("unlearned bundle written to %s\n%s", output_dir, table)
    return {"output_dir": os.path.abspath(output_dir), "num_forgotten": len(forget_items),
            "num_remain": len(remain_items), "table": table, "record": record}


def is_segmentation_datalist(datalist: Any) -> bool:
    """Whether a training datalist is a segmentation one: its labels are label-map file paths, not class indices."""
    for item in datalist:
        label = item.get("label") if isinstance(item, Mapping) else None
        if label is None:
            continue
        if isinstance(label, (list, tuple)) and label:
            label = label[0]
        return isinstance(label, (str, os.PathLike))
    return False


def select_segmentation_forget(
    datalist: list, selector: str, num_classes: int | None = None
) -> tuple[list, list, list[int] | None, bool]:
    """Forget and remain items of a segmentation datalist, and the label classes to forget voxel by voxel.

    ``label=k`` (or ``label=1|3``) forgets label class ``k``: its voxels take the boundary-search labels and every
    other voxel keeps its own. Alone, it applies to every training case (forget and remain items are then the
    same list, and the remain term ignores class ``k``'s voxels); with other criteria (``label=3,device=a``) only
    the selected cases forget it and the others keep it. Any other selector (``case=...``, ``device=...``, an
    ids file) forgets whole cases.

    Returns:
        ``(forget_items, remain_items, forget_classes or None, remain term ignores the forgotten classes)``.

    Raises:
        ForgetSelectionError: for a bad selection; ``ValueError`` for a class outside ``num_classes``.
    """
    kwargs = parse_forget_selector(selector)
    if "label" not in kwargs:
        for unsupported in ("label_key",):
            kwargs.pop(unsupported, None)
        forget, remain = select_forget(datalist, **kwargs)
        return list(forget), list(remain), None, True
    label = kwargs.pop("label")
    kwargs.pop("num_classes", None)
    classes = sorted({int(c) for c in (label if isinstance(label, (list, tuple, set)) else [label])})
    if num_classes is not None:
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"cannot forget class(es) {bad}: the bundle's network outputs {num_classes} classes "
                             f"(0..{num_classes - 1}).")
    if not kwargs:
        return datalist, datalist, classes, True
    forget, remain = select_forget(datalist, **kwargs)
    return list(forget), list(remain), classes, False


def _sliding_window_roi(parser: ConfigParser, inferer_id: str | None) -> Any:
    """The ROI of the bundle's evaluation inferer when it is a ``SlidingWindowInferer`` (else ``None``)."""
    if not inferer_id:
        return None
    config = parser.get(inferer_id)
    if not isinstance(config, Mapping) or "SlidingWindowInferer" not in str(config.get("_target_", "")):
        return None
    roi = parser.get_parsed_content(f"{inferer_id}#roi_size")
    return list(roi) if isinstance(roi, (list, tuple)) else roi


def calling_config_parser() -> ConfigParser:
    """The ``ConfigParser`` that is evaluating the current config expression.

    ``python -m monai.bundle run unlearn`` evaluates the overlay's ``unlearn`` expressions inside
    ``ConfigParser.get_parsed_content``; the parser is found on the call stack so the expression can read the
    wrapped bundle's own config ids, whatever its layout.

    Raises:
        RuntimeError: when not called from within a config expression.
    """
    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, ConfigParser):
            return candidate
        frame = frame.f_back
    raise RuntimeError("unlearn_running_bundle() must run inside a bundle config (python -m monai.bundle run unlearn ...).")


def unlearn_running_bundle() -> dict[str, Any]:
    """Entry point of ``bundles/unlearn/configs/unlearn.json``: unlearn from the config being run."""
    return unlearn_from_parser(calling_config_parser())


class UnlearnWorkflow(ConfigWorkflow):
    """The unlearn bundle as a workflow class, for ``python -m monai.bundle run_workflow``.

    Example::

        python -m monai.bundle run_workflow monai_unlearn.bundle.UnlearnWorkflow \\
            --config_file <B>/configs/train.json --meta_file <B>/configs/metadata.json --bundle_root <B> \\
            --forget device=scanner_a --output_dir <OUT>

    Keyword arguments other than the ``ConfigWorkflow`` ones override config ids, as with ``run``.
    """

    def __init__(self, config_file: str | list[str], **kwargs: Any) -> None:
        kwargs.setdefault("workflow_type", None)
        super().__init__(config_file=config_file, **kwargs)
        self.summary: dict[str, Any] | None = None

    def run(self) -> dict[str, Any]:
        """Unlearn and write the new bundle; returns the summary of ``unlearn_from_parser``."""
        self.summary = unlearn_from_parser(self.parser)
        return self.summary

    def check_properties(self) -> list[str] | None:
        """Unlearning reads its own parts (see ``detect_layout``), not the train workflow's properties."""
        return None
