"""A MONAI trainer whose iteration is one PSG unlearning step."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from typing import TYPE_CHECKING, Any

import torch
from monai.engines.trainer import Trainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn
from monai.engines.workflow import Workflow
from monai.transforms import Transform
from monai.utils import IgniteInfo, min_version, optional_import
from monai.utils.enums import CommonKeys as Keys
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from monai_unlearn.core.batch import default_prepare_batch, label_index_for_image
from monai_unlearn.core.checks import class_mask, mask_forgotten_classes, validate_first_batch
from monai_unlearn.core.config import PSGConfig
from monai_unlearn.core.unlearner import PSGUnlearner

if TYPE_CHECKING:
    from ignite.engine import Engine, EventEnum
    from ignite.metrics import Metric
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    EventEnum, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "EventEnum")
Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["UnlearningTrainer", "as_psg_config", "split_prepared_batch"]


def as_psg_config(config: PSGConfig | Mapping[str, Any] | None) -> PSGConfig:
    """A ``PSGConfig`` from a config object, a plain dictionary (as a bundle config gives it) or ``None``.

    Raises:
        TypeError: for any other type.
        ValueError: when a parameter is invalid (raised by ``PSGConfig``).
    """
    if config is None:
        return PSGConfig()
    if isinstance(config, PSGConfig):
        return config
    if isinstance(config, Mapping):
        return PSGConfig(**dict(config))
    raise TypeError(f"config must be a PSGConfig, a dict or None, got {type(config).__name__}.")


def split_prepared_batch(batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
    """Split what a MONAI ``prepare_batch`` returned, ``(image, label)`` or ``(image, label, args, kwargs)``.

    Raises:
        ValueError: for any other length.
    """
    if len(batch) == 2:
        image, label = batch
        return image, label, (), {}
    if len(batch) == 4:
        image, label, args, kwargs = batch
        return image, label, tuple(args or ()), dict(kwargs or {})
    raise ValueError(
        f"prepare_batch must return (image, label) or (image, label, args, kwargs), got {len(batch)} items."
    )


class UnlearningTrainer(Trainer):
    """PSG unlearning as a MONAI trainer: each iteration is one ``PSGUnlearner`` step on a forget batch.

    The engine iterates over the *forget* data. For each forget batch it runs the boundary search on the frozen
    reference (the original model), computes ``forget_loss + phi * remain_loss`` with the next batch of the
    remain loader and updates ``network`` in place. Every epoch (pass over the forget data) starts a fresh pass
    over the remain loader (restarted within the epoch if it runs out), so an epoch boundary is a complete
    resume point; a ``DistributedSampler`` on the remain loader gets ``set_epoch`` like the forget loader's.
    The first forget and remain batches are checked once against the network (shape, labels within its
    classes, finite values).

    Like ``SupervisedTrainer`` it fires MONAI's ``IterationEvents`` so decollation, ``postprocessing``,
    ``key_train_metric``/``additional_metrics`` and MONAI handlers (``StatsHandler``, ``CheckpointSaver``, ...)
    keep working:

    - ``FORWARD_COMPLETED`` after the boundary search and the forward passes (``PRED`` is in the output),
    - ``LOSS_COMPLETED`` once ``LOSS`` is in the output,
    - ``BACKWARD_COMPLETED`` and then ``MODEL_COMPLETED`` after the optimizer step (``PSGUnlearner.update``
      performs backward and step together, so gradients can be read but not changed before the step).

    ``engine.state.output`` holds ``CommonKeys.IMAGE`` (forget image), ``CommonKeys.LABEL`` (forget label),
    ``CommonKeys.PRED`` (the model's forget logits, detached), ``CommonKeys.LOSS`` (detached), and the
    detached tensors ``"forget_loss"``, ``"remain_loss"``, ``"flip_rate"``, ``"boundary_target"`` and
    ``"nonfinite_input"`` (a boolean scalar: the forget or remain images held NaN or infinite values; checked per
    pass by ``UnlearningHistoryHandler``). Nothing is read back to the host inside an iteration.

    The PSG parameters are kept in ``engine.state.unlearning_config`` (a dict) for reports.

    Args:
        device: the device to run on.
        max_epochs: passes over the forget data.
        forget_data_loader: the forget data (``Iterable`` or ``DataLoader``).
        network: the trained network, revised in place.
        optimizer: optimizer over ``network``'s parameters.
        config: PSG parameters: a ``PSGConfig``, a dictionary of its fields (bundle configs), or ``None`` for
            the defaults.
        remain_data_loader: the remain data; needed when ``config.phi > 0``.
        reference: the frozen original model; a frozen copy of ``network`` is taken at construction when ``None``.
        epoch_length: iterations per epoch, default ``len(forget_data_loader)``.
        non_blocking: passed to ``prepare_batch``.
        prepare_batch: ``prepare_batch(batchdata, device, non_blocking, **to_kwargs)`` returning ``(image, label)``
            or ``(image, label, args, kwargs)``; used for forget and remain batches. ``args``/``kwargs`` must be
            empty: the boundary search calls the network with the image alone.
        iteration_update: replaces ``_iteration`` when given, as in ``monai.engines``.
        postprocessing: transforms applied to the output after each iteration.
        key_train_metric: an ignite metric computed on the output (e.g. ``Accuracy`` of the forget predictions).
        additional_metrics: more ignite metrics.
        metric_cmp_fn: compares the key metric with the best so far.
        train_handlers: handlers to attach (objects with ``attach``), in order; ``None`` entries (components a
            bundle config disabled) are skipped.
        amp: mixed precision on CUDA (autocast plus ``PSGUnlearner``'s gradient scaler); ignored on CPU.
        event_names: additional custom events to register.
        event_to_attr: maps custom events to state attributes.
        decollate: decollate batch-first outputs after each iteration.
        to_kwargs: extra arguments for ``prepare_batch`` (passed to ``Tensor.to``).
        amp_kwargs: stored for MONAI handlers; the unlearning step uses ``torch.autocast("cuda")`` defaults.
        forget_mask_fn: optional ``callable(image, label) -> bool mask (B, *spatial)`` selecting the voxels to
            forget (segmentation: forget one label class and keep the others' labels).
        forget_classes: segmentation: forget these label classes voxel by voxel (the mask is the voxels of these
            classes; every other voxel keeps its label). Exclusive with ``forget_mask_fn``.
        remain_ignore_forget_classes: with ``forget_classes``, the remain term ignores those classes' voxels so it
            does not teach them back; ``False`` when the remain cases keep the class.
        channels_last: keep 4D image batches in ``torch.channels_last`` memory format (GPU speed; the network
            should be converted too).
        check_at_start: check the first forget batch against the network at ``Events.STARTED``, before any
            handler evaluates anything (label maps and classes that do not fit fail at once). It reads one extra
            batch from the forget loader; otherwise the check runs on the first iteration's batch.
        withdrawn_classes: classes withdrawn from the model (no kept item has them): no boundary target takes
            them, so a forget item whose search did not cross the boundary moves toward the nearest class that
            stays instead of keeping its label, and their probability on the forget items is driven toward 0
            (``PSGConfig.withdrawn_weight``). ``regime_stop_handler`` finds them (its handler's
            ``withdrawn_classes``); ``None`` uses the boundary point's label as the paper does.

    Raises:
        ValueError: when ``config.phi > 0`` but no remain loader is given, ``max_epochs < 1``, or both
            ``forget_classes`` and ``forget_mask_fn`` are given.

    Example::

        trainer = UnlearningTrainer(
            device="cuda", max_epochs=10, forget_data_loader=forget_loader, network=net,
            optimizer=torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9),
            config=PSGConfig(eps=0.05, num_steps=5, gamma=0.5, phi=1.0), remain_data_loader=remain_loader,
            train_handlers=[StatsHandler(output_transform=from_engine(["loss"], first=True))],
        )
        trainer.run()
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        forget_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: Optimizer,
        config: PSGConfig | Mapping[str, Any] | None = None,
        remain_data_loader: Iterable | DataLoader | None = None,
        reference: torch.nn.Module | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        postprocessing: Transform | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        forget_mask_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        forget_classes: Sequence[int] | None = None,
        remain_ignore_forget_classes: bool = True,
        channels_last: bool = False,
        check_at_start: bool = False,
        withdrawn_classes: Sequence[int] | None = None,
    ) -> None:
        config = as_psg_config(config)
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be at least 1, got {max_epochs}.")
        if forget_classes is not None and forget_mask_fn is not None:
            raise ValueError("give forget_classes or forget_mask_fn, not both.")
        if config.phi > 0 and remain_data_loader is None:
            raise ValueError("config.phi > 0 needs a remain_data_loader; pass one or set phi=0.")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=forget_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=None,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.network = network
        self.optimizer = optimizer
        self.config = config
        self.remain_data_loader = remain_data_loader
        self.forget_mask_fn = forget_mask_fn
        self.forget_classes = None if forget_classes is None else [int(c) for c in forget_classes]
        self.remain_ignore_forget_classes = remain_ignore_forget_classes
        self.channels_last = channels_last
        self._classes: torch.Tensor | None = None
        length = self.state.epoch_length
        total = None if length is None else int(max_epochs) * int(length)
        self.unlearner = PSGUnlearner(network, optimizer, config, reference=reference, amp=amp, total_iterations=total,
                                      withdrawn_classes=withdrawn_classes)
        self.state.unlearning_config = config.to_dict()
        self.scaler = self.unlearner.scaler  # the gradient scaler in use, for handlers and checkpoints
        self._remain_iter: Iterator[Any] | None = None
        self._checked = False
        if check_at_start:  # registered before the handlers, so it runs before their STARTED evaluations
            self.add_event_handler(Events.STARTED, self._check_first_forget_batch)
        self.add_event_handler(Events.EPOCH_STARTED, self._start_remain_pass)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._finish_forget_pass)  # before any handler's
        # handlers last, so they see a complete engine (network, optimizer, unlearner) when attached
        if train_handlers is not None:  # None entries are handlers a bundle config disabled (``_disabled_``)
            self._register_handlers([h for h in train_handlers if h is not None])

    def run(self) -> None:  # type: ignore[override]
        """Run the unlearning (continues from the previous state when called again).

        Unlike ``Trainer.run`` no new gradient scaler is made: ``self.scaler`` is ``PSGUnlearner``'s own.
        """
        Workflow.run(self)

    @property
    def reference(self) -> torch.nn.Module:
        """The frozen original model the boundary search runs on."""
        return self.unlearner.reference

    def _prepare(self, batchdata: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        kwargs = self.to_kwargs
        batch = (
            self.prepare_batch(batchdata, self.state.device, self.non_blocking, **kwargs)
            if kwargs
            else self.prepare_batch(batchdata, self.state.device, self.non_blocking)
        )
        image, label, args, extra = split_prepared_batch(batch)
        if args or extra:
            raise ValueError(
                f"prepare_batch returned extra network arguments for the {what} batch; the boundary search calls "
                "the network with the image alone, so return (image, label) or empty args and kwargs."
            )
        if self.channels_last and image.ndim == 4:
            image = image.contiguous(memory_format=torch.channels_last)
        return image, label

    def _check_first_forget_batch(self, engine: Engine) -> None:
        image, label = self._prepare(next(iter(self.data_loader)), "forget")
        validate_first_batch(self.unlearner.reference, image, label, "forget", self._classes_to_check())

    def _classes_to_check(self) -> list[int] | None:
        """The label classes the network must output: those forgotten voxel by voxel and those withdrawn."""
        classes = set(self.forget_classes or []) | set(self.unlearner.withdrawn_classes or [])
        return sorted(classes) if classes else None

    def _start_remain_pass(self, engine: Engine) -> None:
        """A fresh pass over the remain data with each epoch (shuffled anew by a ``DistributedSampler``)."""
        self._remain_iter = None
        sampler = getattr(self.remain_data_loader, "sampler", None)
        if hasattr(sampler, "set_epoch") and self.remain_data_loader is not self.data_loader:
            sampler.set_epoch(engine.state.epoch)

    def _finish_forget_pass(self, engine: Engine) -> None:
        """Close the epoch's pass over the forget loader as a ``for`` loop would, before other epoch-end handlers.

        ignite stops after ``epoch_length`` batches and only exhausts the loader's iterator at the next epoch; a
        shuffling sampler draws from its generator when exhausted, so closing it here keeps the generator's state
        at an epoch boundary the same whether the run continues, evaluates the forget loader or resumes.
        """
        loader, iterator = self.data_loader, getattr(self, "_dataloader_iter", None)
        if iterator is None or not isinstance(loader, Sized) or len(loader) != self.state.epoch_length:
            return
        if next(iterator, None) is None:  # exhausted, as expected for a full pass
            self._dataloader_iter = None  # ignite starts a fresh iterator with the next epoch

    def _next_remain(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = None if self._remain_iter is None else next(self._remain_iter, None)
        if batch is None:  # the epoch's first remain batch, or the remain data ran out within the epoch
            self._remain_iter = iter(self.remain_data_loader)  # type: ignore[arg-type]
            batch = next(self._remain_iter, None)
            if batch is None:
                raise ValueError("the remain loader yielded no batches.")
        return self._prepare(batch, "remain")

    def _forget_masks(
        self, forget_image: torch.Tensor, forget_label: torch.Tensor, remain_image: Any, remain_label: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        """``(forget_label, forget_mask, remain_label)`` with the masks of label-class forgetting applied."""
        if self.forget_mask_fn is not None:
            return forget_label, self.forget_mask_fn(forget_image, forget_label), remain_label
        if self.forget_classes is None:
            return forget_label, None, remain_label
        if self._classes is None or self._classes.device != forget_image.device:
            self._classes = torch.as_tensor(self.forget_classes, device=forget_image.device)
        forget_label = label_index_for_image(forget_label, forget_image)
        mask = class_mask(forget_label, self._classes)
        if remain_label is not None and self.remain_ignore_forget_classes:
            remain_label = mask_forgotten_classes(remain_label, remain_image, self._classes)
        return forget_label, mask, remain_label

    def _iteration(self, engine: UnlearningTrainer, batchdata: Any) -> dict:
        """One PSG step on a forget batch, firing MONAI's ``IterationEvents``.

        Args:
            engine: this trainer.
            batchdata: a forget batch as the loader yielded it.

        Returns:
            the iteration output (see the class docstring).

        Raises:
            ValueError: when ``batchdata`` is None, or the first forget/remain batch does not fit the network
                (shape, or labels outside its classes).
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        forget_image, forget_label = engine._prepare(batchdata, "forget")
        remain_image = remain_label = None
        if engine.unlearner.config.phi > 0:
            remain_image, remain_label = engine._next_remain()
        if not engine._checked:
            validate_first_batch(engine.unlearner.reference, forget_image, forget_label, "forget",
                                 engine._classes_to_check())
            if remain_image is not None:
                validate_first_batch(engine.unlearner.reference, remain_image, remain_label, "remain")
            engine._checked = True
        nonfinite = ~torch.isfinite(forget_image).all()  # stays on the device: no sync here
        if remain_image is not None:
            nonfinite = nonfinite | ~torch.isfinite(remain_image).all()
        forget_label, mask, remain_label = engine._forget_masks(forget_image, forget_label, remain_image, remain_label)

        engine.state.output = {Keys.IMAGE: forget_image, Keys.LABEL: forget_label, "nonfinite_input": nonfinite}
        out = engine.unlearner.compute_losses(forget_image, forget_label, remain_image, remain_label, mask)
        engine.state.output[Keys.PRED] = out["forget_logits"].detach()
        engine.state.output["boundary_target"] = out["target"]
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.state.output[Keys.LOSS] = out["loss"].detach()
        engine.state.output["forget_loss"] = out["forget_loss"]
        engine.state.output["remain_loss"] = out["remain_loss"]
        engine.state.output["flip_rate"] = out["flip_rate"]
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.unlearner.update(out["loss"], out["head_only"])
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
