"""Turn an existing ``SupervisedTrainer`` into PSG unlearning with one handler."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_unlearn.core.batch import label_index_for_image
from monai_unlearn.core.boundary_search import frozen_reference
from monai_unlearn.core.config import PSGConfig
from monai_unlearn.core.losses import forget_loss, remain_loss
from monai_unlearn.core.unlearner import PSGUnlearner
from monai_unlearn.core.targets import targets_differ
from monai_unlearn.engines.unlearning_trainer import as_psg_config, split_prepared_batch
from monai_unlearn.core.batch import cycle
from monai_unlearn.core.checks import validate_first_batch

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["PSGUnlearningHandler"]


class PSGUnlearningHandler:
    """Makes a ``monai.engines.SupervisedTrainer`` perform PSG unlearning, without subclassing it.

    Attach it to a trainer whose ``train_data_loader`` yields the **forget** data. While the engine runs, the
    handler changes exactly two attributes of the engine, and puts the originals back when the run ends:

    - ``engine.prepare_batch`` is wrapped: the original prepares the batch as before, then the labels are
      replaced by the PSG boundary-search targets found on the frozen reference (class indices for ``"hard"``
      targets, probabilities ``(B, C, ...)`` for ``"soft"``/``"topk"``). The tuple form the original returned
      (``(image, label)`` or ``(image, label, args, kwargs)``) is kept, so ``engine.state.output[LABEL]`` holds
      the boundary targets.
    - ``engine.loss_function`` is replaced by the PSG objective ``forget_loss(pred, target) + phi *
      remain_loss`` where the remain term comes from a forward of ``engine.network`` on the next batch of
      ``remain_data_loader`` (cycled). The trainer calls the loss inside its own autocast context, so under
      AMP the remain forward runs in it as well. The trainer's original loss function is not used meanwhile.

    Everything else (optimizer, AMP scaler, gradient accumulation, inferer, metrics, other handlers) stays the
    trainer's own. On ``Events.STARTED`` the frozen reference is snapshotted from ``engine.network`` (unless one
    was given; the snapshot is kept for later runs, so re-running continues against the *original* model), and
    the PSG parameters are stored in ``engine.state.unlearning_config``. The lambda schedule advances once per
    iteration over ``max_epochs * epoch_length`` iterations. The originals are restored on ``Events.COMPLETED``,
    ``Events.TERMINATE`` and ``Events.EXCEPTION_RAISED`` (the exception is re-raised). Attaching twice to the
    same engine is a no-op.

    With ``phi = 0``, hard targets and a plain optimizer, one epoch over an unshuffled loader gives the same
    weights as ``UnlearningTrainer`` (which uses the same ``PSGUnlearner`` search and targets). With ``phi > 0``
    the results differ slightly where the network has batch statistics (BatchNorm): ``UnlearningTrainer``
    forwards forget and remain images in one batch, this handler in two.

    Args:
        config: PSG parameters: a ``PSGConfig``, a dict of its fields, or ``None`` for the defaults.
        remain_data_loader: remain batches, prepared with the trainer's own ``prepare_batch``; needed when
            ``phi > 0``.
        reference: the frozen original model; snapshotted from ``engine.network`` at the first start when ``None``.
        forget_mask_fn: optional ``callable(image, label) -> bool mask (B, *spatial)``: the voxels to forget
            (segmentation); other voxels keep their labels.
        withdrawn_classes: classes withdrawn from the model, which no boundary target takes (as
            ``UnlearningTrainer``'s; ``regime_stop_handler`` finds them). ``None``: the paper's targets.

    Raises:
        ValueError: when ``phi > 0`` and no remain loader is given.

    Example::

        trainer = SupervisedTrainer(device, max_epochs=10, train_data_loader=forget_loader, network=net,
                                    optimizer=opt, loss_function=torch.nn.CrossEntropyLoss())
        PSGUnlearningHandler(PSGConfig(eps=0.05, phi=1.0), remain_data_loader=remain_loader).attach(trainer)
        trainer.run()
    """

    def __init__(
        self,
        config: PSGConfig | Mapping[str, Any] | None = None,
        remain_data_loader: Iterable | None = None,
        reference: torch.nn.Module | None = None,
        forget_mask_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        withdrawn_classes: Sequence[int] | None = None,
    ) -> None:
        self.config = as_psg_config(config)
        self.withdrawn_classes = withdrawn_classes
        if self.config.phi > 0 and remain_data_loader is None:
            raise ValueError("config.phi > 0 needs a remain_data_loader; pass one or set phi=0.")
        self.remain_data_loader = remain_data_loader
        self.reference = reference
        self.forget_mask_fn = forget_mask_fn
        self.unlearner: PSGUnlearner | None = None
        self.flip_rate: torch.Tensor | None = None
        self._engine: Engine | None = None
        self._original_prepare_batch: Callable | None = None
        self._original_loss_function: Callable | None = None
        self._remain_iter: Iterator[Any] | None = None
        self._checked = False
        self._remain_checked = False

    @property
    def iteration(self) -> int:
        """Unlearning iterations performed so far (drives the lambda schedule)."""
        return 0 if self.unlearner is None else self.unlearner.iteration

    def attach(self, engine: Engine) -> None:
        """Register the handler's callbacks on ``engine`` (a ``SupervisedTrainer``); a second call is a no-op.

        The engine's attributes are checked when it starts: MONAI attaches ``train_handlers`` before it sets
        ``network``, ``optimizer`` and ``loss_function``.

        Raises:
            RuntimeError: when the handler is already attached to another engine.
        """
        if self._engine is not None and self._engine is not engine:
            raise RuntimeError("this PSGUnlearningHandler is already attached to another engine; create a new one.")
        if engine.has_event_handler(self._started, Events.STARTED):
            return
        self._engine = engine
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.COMPLETED, self._restore)
        engine.add_event_handler(Events.TERMINATE, self._restore)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._exception_raised)

    def __call__(self, engine: Engine) -> None:
        """Install the PSG wrappers on ``engine`` (what happens on ``Events.STARTED``).

        Raises:
            TypeError: when the engine lacks ``network``, ``optimizer``, ``prepare_batch`` or ``loss_function``.
        """
        self._started(engine)

    def _started(self, engine: Engine) -> None:
        if self._original_prepare_batch is not None:  # already installed
            return
        missing = [a for a in ("network", "optimizer", "prepare_batch", "loss_function") if not hasattr(engine, a)]
        if missing:
            raise TypeError(
                f"PSGUnlearningHandler needs a SupervisedTrainer-like engine; {type(engine).__name__} lacks {missing}."
            )
        if self.reference is None:
            self.reference = frozen_reference(engine.network)
        if self.unlearner is None:
            length = engine.state.epoch_length
            total = None if length is None else int(engine.state.max_epochs) * int(length)
            self.unlearner = PSGUnlearner(
                engine.network,
                engine.optimizer,
                self.config,
                reference=self.reference,
                amp=bool(getattr(engine, "amp", False)),
                total_iterations=total,
                withdrawn_classes=self.withdrawn_classes,
            )
        engine.state.unlearning_config = self.config.to_dict()
        self._original_prepare_batch = engine.prepare_batch
        self._original_loss_function = engine.loss_function
        engine.prepare_batch = self._prepare_batch
        engine.loss_function = self._loss_function

    def _restore(self, engine: Engine) -> None:
        if self._original_prepare_batch is not None:
            engine.prepare_batch = self._original_prepare_batch
            engine.loss_function = self._original_loss_function
        self._original_prepare_batch = None
        self._original_loss_function = None

    def _exception_raised(self, engine: Engine, e: BaseException) -> None:
        self._restore(engine)
        raise e

    def _original_prepare(self, batchdata: Any, device: Any, non_blocking: bool, **kwargs: Any) -> tuple:
        prepare = self._original_prepare_batch
        if prepare is None:
            raise RuntimeError("PSGUnlearningHandler is not installed: the engine has not started.")
        batch = prepare(batchdata, device, non_blocking, **kwargs) if kwargs else prepare(batchdata, device, non_blocking)
        return tuple(batch)

    def _prepare_batch(self, batchdata: Any, device: Any = None, non_blocking: bool = False, **kwargs: Any) -> tuple:
        """The original ``prepare_batch`` with the labels replaced by boundary-search targets."""
        batch = self._original_prepare(batchdata, device, non_blocking, **kwargs)
        image, label, _, _ = split_prepared_batch(batch)
        unlearner = self.unlearner
        if unlearner is None:
            raise RuntimeError("PSGUnlearningHandler is not installed: the engine has not started.")
        if not self._checked:
            validate_first_batch(unlearner.reference, image, label, "forget", unlearner.withdrawn_classes)
            self._checked = True
        mask = self.forget_mask_fn(image, label) if self.forget_mask_fn is not None else None
        target, label_index = unlearner.forget_targets(image, label, mask)
        differ = targets_differ(target, label_index)
        if mask is not None:
            self.flip_rate = ((differ & mask).sum() / mask.sum().clamp_min(1)).detach()
        else:
            self.flip_rate = differ.float().mean().detach()
        unlearner.iteration += 1  # the lambda schedule advances once per unlearning iteration
        return (image, target, *batch[2:])

    def _loss_function(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``forget_loss(pred, target) + phi * remain_loss`` on the next remain batch."""
        engine = self._engine
        loss = forget_loss(pred, target)
        cfg = self.config
        if cfg.phi <= 0:
            return loss
        if self._remain_iter is None:
            self._remain_iter = cycle(self.remain_data_loader)  # type: ignore[arg-type]
        batch = self._original_prepare(
            next(self._remain_iter), engine.state.device, engine.non_blocking, **engine.to_kwargs
        )
        remain_image, remain_label, _, _ = split_prepared_batch(batch)
        reference = self.reference
        if not self._remain_checked:
            validate_first_batch(reference, remain_image, remain_label, "remain")
            self._remain_checked = True
        remain_logits = engine.network(remain_image)
        reference_logits = None
        if cfg.remain_loss == "distill":
            with torch.no_grad():
                reference_logits = reference(remain_image).float()
        remain_index = label_index_for_image(remain_label, remain_image)
        return loss + cfg.phi * remain_loss(
            remain_logits, remain_index, cfg.remain_loss, reference_logits, cfg.distill_temperature
        )
