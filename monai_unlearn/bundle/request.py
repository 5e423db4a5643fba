"""What the wrapped bundle gives an unlearning run: its network and weights, data, preprocessing and device."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from functools import cached_property
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.transforms import Compose

from monai_unlearn.bundle.checkpoint import load_bundle_weights
from monai_unlearn.bundle.datalist import datalist_items, item_content_sha256, item_path
from monai_unlearn.bundle.forget_items import has_class_labels, select_bundle_items, sliding_window_roi, transformed_labels
from monai_unlearn.bundle.inputs import ShapeCheck, screen_items
from monai_unlearn.bundle.layout import detect_layout, missing_package
from monai_unlearn.bundle.parser import calling_config_parser
from monai_unlearn.bundle.settings import selector_text, setting
from monai_unlearn.bundle.task import detect_task
from monai_unlearn.core.datalist_values import normalize_label
from monai_unlearn.core.regime import resolve_regime
from monai_unlearn.distributed import distributed_sampler, init_distributed, is_distributed, rank_device
from monai_unlearn.metrics.evaluation import evaluate_unlearning
from monai_unlearn.metrics.headline import forget_scorer
from monai_unlearn.metrics.segmentation import evaluate_segmentation

__all__ = ["UnlearningRequest"]

logger = logging.getLogger(__name__)


class UnlearningRequest:
    """The parts of the wrapped bundle an unlearning run needs, read once from the merged config.

    Built by ``unlearn.json`` (``unlearn#request``) while ``python -m monai.bundle run unlearn`` parses it. It finds
    the bundle's network, training and validation datalists, deterministic preprocessing and device (see
    ``detect_layout``), selects the forget and remain items from the ``forget`` selector, loads the weights
    (``weights_only=True``) and screens every item once (``unlearn_screen_inputs``). The overlay's other
    components (datasets, loaders, optimizer, trainer, handlers) are built from its attributes; ``write_bundle``
    writes the new bundle once the trainer has run. The wrapped bundle is only read: none of its trainers,
    handlers or savers is built.

    Args:
        parser: the merged config; ``None`` finds the parser evaluating the current config expression.
        distributed_backend: start a ``torch.distributed`` process group with this backend first (under
            ``torchrun``, the ``multi_gpu_unlearn.json`` overlay); ``None`` runs in one process.

    Raises:
        ValueError: for a missing forget selector or output folder, a bad selection, a datalist that is not a list
            of dicts, unusable items, or a bundle layout that cannot be understood.
        FileNotFoundError: when the weights are missing.
        FileExistsError: when ``output_dir`` exists and ``unlearn_overwrite`` is false.
    """

    def __init__(self, parser: ConfigParser | None = None, distributed_backend: str | None = None) -> None:
        try:
            self._read(parser if parser is not None else calling_config_parser(), distributed_backend)
        except Exception as error:  # MONAI wraps it in "Failed to instantiate ...": say the cause on its own line
            logger.error("unlearning cannot start: %s: %s", type(error).__name__, error)
            raise

    def _read(self, parser: ConfigParser, distributed_backend: str | None) -> None:
        self.parser = parser
        self.selector = selector_text(setting(parser, "forget"))
        output_dir = setting(parser, "output_dir")
        if not output_dir:
            raise ValueError("no output folder given: pass `--output_dir <new bundle folder>`.")
        self.output_dir = str(output_dir)
        self.output_path = os.path.abspath(self.output_dir)
        self.overwrite = setting(parser, "unlearn_overwrite")
        if os.path.exists(self.output_dir) and not self.overwrite:
            raise FileExistsError(f"{self.output_dir} already exists; choose a new folder or pass "
                                  "`--unlearn_overwrite true`.")
        if distributed_backend:
            init_distributed(distributed_backend)
        self.bundle_root = os.path.abspath(str(parser.get("bundle_root", ".")))
        self.layout = detect_layout(parser, setting(parser, "unlearn_keys"))
        self.device = rank_device(parser.get_parsed_content(self.layout.device) if self.layout.device else "cpu")
        self.amp = setting(parser, "unlearn_amp")
        self.channels_last = setting(parser, "unlearn_channels_last")
        self.progress = setting(parser, "unlearn_progress")
        self.resume = setting(parser, "unlearn_resume")
        every = setting(parser, "unlearn_checkpoint_every")
        self.checkpoint_dir = self.output_path + ".checkpoint" if (every or self.resume) else None
        self.batch_size = int(setting(parser, "unlearn_batch_size"))
        self.num_workers = int(setting(parser, "unlearn_num_workers"))
        self.shuffle = setting(parser, "unlearn_shuffle")
        self.seed = int(setting(parser, "unlearn_params").get("seed") or 0)

        data = datalist_items(self._part(self.layout.datalist, "training data"), self.layout.datalist)
        datalist = data.items
        self.datalist_source = data.source
        self.positions = {id(item): i for i, item in enumerate(datalist)}  # an item's index in the training data
        self.num_classes = parser.get("num_classes") if isinstance(parser.get("num_classes"), int) else None

        self.network = self._part(self.layout.network, "network", lazy=False)
        load_bundle_weights(self.network, setting(parser, "unlearn_ckpt") or os.path.join(
            self.bundle_root, "models", "model.pt"), self.device)
        self.network.to(self.device)
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)
        retrained_ckpt = setting(parser, "unlearn_retrained_ckpt")
        self.retrained = (load_bundle_weights(self._part(self.layout.network, "network", lazy=False),
                                              retrained_ckpt, self.device) if retrained_ckpt else None)
        # a dataset that transforms its own items gives them ready: the preprocessing is not applied twice
        self.transform = Compose([]) if data.transformed else self._part(self.layout.preprocessing, "preprocessing")
        if self.layout.val_datalist:  # read now, so a missing package or a bad id fails before any work
            self.val_source = datalist_items(self._part(self.layout.val_datalist, "validation data"),
                                             self.layout.val_datalist).items
        else:
            self.val_source = []

        self.task, self.task_reason = self._detect_task(datalist, setting(parser, "unlearn_task"))
        logger.info("task: %s (%s)", self.task, self.task_reason)
        labels = None
        if self.task == "classification" and not has_class_labels(datalist):
            labels = transformed_labels(datalist, self.transform)  # classes made by the bundle's transforms
        self.forget_classes: list[int] | None = None
        forget, remain, self.forget_classes, self.remain_ignore_forget_classes = select_bundle_items(
            datalist, self.selector, self.task, self.num_classes, labels)
        self.labels = None if labels is None else {id(item): c for item, c in zip(datalist, labels)}
        logger.info("forgetting %s of %d training items (selector %r)",
                    f"class(es) {self.forget_classes} in {len(forget)}" if self.forget_classes else len(forget),
                    len(datalist), self.selector)

        self.step_transform = self.transform
        patch_size = setting(parser, "unlearn_patch_size") if self.task == "segmentation" else None
        if patch_size:
            from monai.transforms import RandSpatialCropd

            self.step_transform = Compose([self.transform, RandSpatialCropd(
                keys=["image", "label"], roi_size=patch_size, random_size=False)])
        self.forget_items, self.remain_items, self.val_items, self.skipped_items = self._screen(forget, remain)
        if not self.forget_items:
            raise ValueError("every forget item was skipped as unreadable: there is nothing left to unlearn.")
        self.roi_size = None
        if self.task == "segmentation":
            self.roi_size = setting(parser, "unlearn_roi_size") or sliding_window_roi(parser, self.layout.inferer)
        self.include_background = setting(parser, "unlearn_include_background")
        self.stopping: dict[str, Any] | None = None
        self.calibrated: Any = None

    def _screen(self, forget: list, remain: list) -> tuple[list, list, list, list]:
        """Screen the forget, remain and validation items once (``unlearn_screen_inputs``)."""
        policy = str(setting(self.parser, "unlearn_screen_inputs"))
        network, device = self.network, self.device

        def probe(image: torch.Tensor) -> None:
            was_training = network.training
            network.eval()
            try:
                with torch.no_grad():
                    network(image.to(device))
            finally:
                network.train(was_training)

        shapes = ShapeCheck(probe, match="channels" if self.task == "segmentation" else "shape")
        forget, skipped = screen_items(forget, self.transform, policy, "forget", shapes=shapes)
        remain, skipped_remain = screen_items(remain, self.transform, policy, "remain", shapes=shapes)
        val, skipped_val = screen_items(self.val_source, self.transform, policy, "validation", shapes=shapes)
        return forget, remain, val, skipped + skipped_remain + skipped_val

    def _part(self, config_id: str, what: str, **kwargs: Any) -> Any:
        """The wrapped bundle's config id, parsed; a package it needs that is missing is named with the id."""
        try:
            return self.parser.get_parsed_content(config_id, **kwargs)
        except Exception as error:
            package = missing_package(error)
            if package is None:
                raise
            raise ModuleNotFoundError(
                f"the wrapped bundle's {what} (config id {config_id!r}) needs the package {package!r}, which is not "
                f"installed: `pip install {package}`. Nothing was done.") from error

    def _detect_task(self, items: list, requested: str | None) -> tuple[str, str]:
        """``detect_task`` on the first item that the preprocessing reads and the network takes (the screening
        reports the others, by name)."""
        for item in items:
            try:
                data = self.transform(copy.deepcopy(dict(item)))
            except Exception:  # unreadable items are reported by the screening
                continue
            data = data[0] if isinstance(data, list) else data
            try:
                return detect_task(self.network, torch.as_tensor(data["image"]), data.get("label"), self.device,
                                   requested)
            except RuntimeError:  # the network cannot process this image: the screening names it
                continue
        raise ValueError(f"none of the {len(items)} training items can be read through the bundle's preprocessing "
                         f"({self.layout.preprocessing!r}) and processed by its network; check the data paths, the "
                         "preprocessing and the network.")

    def item_records(self, items: list) -> list[dict[str, Any]]:
        """How the report names items: the position in the training data, and the content hash of in-memory items
        (items with a path are named by it in the audit, hashed)."""
        records = []
        for item in items:
            record: dict[str, Any] = {"index": self.positions.get(id(item))}
            if item_path(item) is None:
                record["content_sha256"] = item_content_sha256(item)
            records.append(record)
        return records

    @cached_property
    def trained_network(self) -> torch.nn.Module:
        """The module the trainer steps: the network, wrapped in ``DistributedDataParallel`` under torchrun."""
        if not is_distributed():
            return self.network
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(self.network, device_ids=device_ids)

    def loader(self, dataset: Dataset, steps: bool = False, sharded: bool = True) -> DataLoader:
        """A loader over ``dataset``: step loaders shuffle (seeded by ``unlearn_params#seed``); under torchrun every
        loader is sharded (evenly for steps, so ranks keep in step; evaluation shards are gathered back)."""
        shuffle = self.shuffle and steps
        if sharded and is_distributed():
            sampler = distributed_sampler(dataset, shuffle=shuffle, even=steps, seed=self.seed)
            return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers)
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None  # same seed, same order
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          generator=generator)

    def evaluation(self, forget_loader: Any, remain_loader: Any, val_loader: Any) -> Callable[[torch.nn.Module], dict]:
        """``evaluate(network) -> record``: accuracy and MIA over the given loaders, or for segmentation the Dice
        over whole images of the forget and remain items (the step loaders may crop) and ``val_loader``."""
        num_classes, device, amp = self.num_classes, self.device, self.amp
        if self.task != "segmentation":
            return lambda net: evaluate_unlearning(net, forget_loader, remain_loader, val_loader, num_classes, device,
                                                   amp=amp)
        eval_forget = self.loader(Dataset(self.forget_items, self.transform))
        # forgetting a class in every case: forget and remain items are the same cases
        eval_remain = None if self.remain_items is self.forget_items else self.loader(
            Dataset(self.remain_items, self.transform))
        classes, background, roi = self.forget_classes, self.include_background, self.roi_size
        return lambda net: evaluate_segmentation(net, eval_forget, eval_remain, val_loader, num_classes, device,
                                                 forget_classes=classes, include_background=background, roi_size=roi)

    def forget_score(self, forget_loader: Any) -> Callable[[torch.nn.Module], float]:
        """``score(network)``: forget accuracy (or the forgotten classes' Dice) over ``forget_loader``, for stopping."""
        return forget_scorer(self.task, forget_loader, self.num_classes, self.device, amp=self.amp,
                             forget_classes=self.forget_classes, roi_size=self.roi_size)

    def calibrated_stop(self, forget_loader: Any, remain_loader: Any, val_loader: Any, reference: Any) -> Any:
        """The ``CalibratedStopHandler`` of ``unlearn_regime`` (``"auto"``, the default, or a regime name), calibrated
        on the wrapped bundle's validation data with the frozen original ``reference``; ``None`` (a fixed number of
        passes) for ``"fixed"``, or when ``unlearn_stop_at_forget_accuracy`` sets a target and the regime is
        ``"auto"``. The items' classes come from the datalist, without a pass over the data."""
        regime = resolve_regime(setting(self.parser, "unlearn_regime") or None,
                                setting(self.parser, "unlearn_stop_at_forget_accuracy"), self.task,
                                distributed=is_distributed(),
                                names=("unlearn_regime", "unlearn_stop_at_forget_accuracy"))
        if regime is None:
            self.stopping = None
            return None
        from monai_unlearn.handlers.calibrated_stop_handler import regime_stop_handler

        every = setting(self.parser, "unlearn_check_every")
        labels = {}
        if self.task == "classification":
            labels = {"forget_labels": self.item_labels(self.forget_items),
                      "remain_labels": self.item_labels(self.remain_items)}
        handler, self.stopping = regime_stop_handler(
            str(regime), reference, self.network, forget_loader, remain_loader, val_loader,
            self.task, self.forget_classes, self.device, self.forget_score(forget_loader),
            check_every=int(every) if every else None, amp=self.amp, num_classes=self.num_classes,
            roi_size=self.roi_size, remain_norm_stats=setting(self.parser, "unlearn_remain_norm_stats"),
            margin_z=self.margin_z(), **labels)
        self.stopping["held_out"] = f"validation data at {self.layout.val_datalist!r}" if val_loader is not None else None
        self.calibrated = handler
        return handler

    def margin_z(self) -> float:
        """``unlearn_margin_z`` as a number.

        Raises:
            ValueError: for a value that is not one (``regime_stop_handler`` rejects a negative one).
        """
        value = setting(self.parser, "unlearn_margin_z")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"unlearn_margin_z must be a number of standard errors (e.g. 2, or 0 for the "
                             f"tolerance alone), got {value!r}.") from None

    def item_labels(self, items: list) -> list[int]:
        """The class of each classification item: made by the transforms when the datalist's labels are not classes."""
        if self.labels is not None:
            return [self.labels[id(item)] for item in items]
        return [normalize_label(item["label"]) for item in items]

    def write_bundle(self, trainer: Any, history: Any, metrics: Any) -> dict[str, Any]:
        """Write the new bundle from the trainer's run (see ``write_unlearned_bundle``) and return its summary."""
        from monai_unlearn.bundle.output import write_unlearned_bundle

        return write_unlearned_bundle(self, trainer, history, metrics)
