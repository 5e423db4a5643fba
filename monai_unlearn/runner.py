"""The Python entry point: unlearn a forget set from a trained model in one call, with evidence.

``unlearn`` assembles the one unlearning loop (``UnlearningTrainer``) with its default handlers, runs it and
returns the revised model with its record; the bundle workflow assembles the same parts from a config.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.utils import optional_import

from monai_unlearn.core.batch import default_prepare_batch
from monai_unlearn.core.boundary_search import frozen_reference
from monai_unlearn.core.checks import IGNORE_INDEX, class_mask, validate_first_batch
from monai_unlearn.core.config import DEFAULT_EPOCHS, DEFAULT_LR, PSGConfig, method_name
from monai_unlearn.core.regime import resolve_regime
from monai_unlearn.distributed import is_distributed
from monai_unlearn.engines.unlearning_trainer import UnlearningTrainer
from monai_unlearn.handlers.calibrated_stop_handler import regime_stop_handler
from monai_unlearn.handlers.forget_score_handler import ForgetScoreHandler
from monai_unlearn.handlers.forget_target_stopper import ForgetTargetStopper
from monai_unlearn.handlers.unlearning_checkpoint_handler import UnlearningCheckpointHandler
from monai_unlearn.handlers.unlearning_history_handler import UnlearningHistoryHandler
from monai_unlearn.handlers.unlearning_metrics_handler import UnlearningMetricsHandler
from monai_unlearn.metrics.calibration import MARGIN_Z
from monai_unlearn.metrics.evaluation import evaluate_unlearning
from monai_unlearn.metrics.headline import forget_score, forget_scorer, format_table, headline_rows
from monai_unlearn.metrics.segmentation import evaluate_segmentation
from monai_unlearn.result import UnlearningResult, optimizer_record, run_result

ProgressBar, has_progress_bar = optional_import("ignite.handlers", name="ProgressBar")

__all__ = [
    "UnlearningResult",
    "unlearn",
    "method_name",
    "optimizer_record",
    "validate_first_batch",
    "format_table",
    "headline_rows",
    "forget_score",
    "class_mask",
    "IGNORE_INDEX",
    "TASKS",
]

#: the tasks ``unlearn`` evaluates: accuracy for classification, Dice for segmentation.
TASKS = ("classification", "segmentation")

logger = logging.getLogger(__name__)


def unlearn(
    model: torch.nn.Module,
    forget_loader: Iterable[Any],
    remain_loader: Iterable[Any] | None = None,
    config: PSGConfig | None = None,
    epochs: int = DEFAULT_EPOCHS,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = DEFAULT_LR,
    momentum: float = 0.9,
    device: torch.device | str | None = None,
    amp: bool = False,
    channels_last: bool = False,
    prepare_batch: Callable[..., tuple[torch.Tensor, torch.Tensor]] = default_prepare_batch,
    num_classes: int | None = None,
    test_loader: Iterable[Any] | None = None,
    retrained_model: torch.nn.Module | None = None,
    evaluate: bool = True,
    stop_at_forget_accuracy: float | None = None,
    inplace: bool = False,
    progress: bool = True,
    task: str = "classification",
    forget_classes: Sequence[int] | None = None,
    remain_ignore_forget_classes: bool = True,
    evaluate_fn: Callable[[torch.nn.Module], dict[str, Any]] | None = None,
    roi_size: Sequence[int] | int | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    regime: str | None = "auto",
    val_loader: Iterable[Any] | None = None,
    check_every: int | None = None,
    rewind: bool = True,
    remain_norm_stats: bool = False,
    margin_z: float = MARGIN_Z,
) -> tuple[torch.nn.Module, UnlearningResult]:
    """Unlearn the forget set from ``model`` with PSG and return the revised model and its record.

    Builds an ``UnlearningTrainer`` with the default handlers and runs it: ``UnlearningHistoryHandler`` (per-pass
    record and checks), ``UnlearningMetricsHandler`` (evaluation before and after), ``ForgetScoreHandler`` with
    ``ForgetTargetStopper`` (when ``stop_at_forget_accuracy`` is set), ``UnlearningCheckpointHandler`` (with a
    ``checkpoint_dir``) and ignite's ``ProgressBar``. Runs ``epochs`` passes over ``forget_loader``; each forget
    batch is paired with the next remain batch when ``config.phi > 0`` (a fresh remain pass with every forget
    pass). Before and after, the model is evaluated on the
    forget, remain and test loaders, with the membership-inference score of the forget set against the test
    set; a ``retrained_model`` (trained without the forget set) is evaluated the same way and the gap reported.

    Args:
        model: the trained network. Left untouched unless ``inplace``.
        forget_loader: batches of the data to forget.
        remain_loader: batches of the data to keep (needed when ``config.phi > 0``; used for evaluation).
        config: PSG parameters; ``PSGConfig.package_default()`` (the bundle's defaults too) when ``None``.
        epochs: passes over the forget set: the budget of a regime's calibrated stop, or the fixed number of
            passes with ``regime="fixed"``.
        optimizer: an optimizer over the revised model's parameters; only usable with ``inplace=True``.
            ``None`` builds SGD with ``lr`` and ``momentum``.
        lr: learning rate of the default optimizer.
        momentum: momentum of the default optimizer.
        device: where to run; ``None`` keeps the model's device.
        amp: mixed precision on CUDA.
        channels_last: keep the model and 4D image batches in ``torch.channels_last`` memory format (often faster
            for 2D convolutions on GPUs with tensor cores; the numbers are the same up to float rounding). Batches
            are copied to a CUDA device without blocking the host.
        prepare_batch: batch to ``(image, label)``, called as ``prepare_batch(batch, device, non_blocking)``.
        num_classes: number of classes for per-class reports (``None``: from the logits).
        test_loader: held-out batches for the test accuracy and the membership-inference attack.
        retrained_model: optional model retrained without the forget set, for the retrain gap.
        evaluate: evaluate before and after (set ``False`` for timing runs).
        stop_at_forget_accuracy: stop after the first epoch whose forget accuracy is at or below this value.
        inplace: revise ``model`` itself instead of a copy.
        progress: show a progress bar.
        task: ``"classification"`` (accuracy) or ``"segmentation"`` (Dice, see ``evaluate_segmentation``).
            Segmentation batches carry label maps ``(B, 1, *S)`` or ``(B, *S)``; the whole forget images take
            the reference's boundary labels voxel by voxel (forgetting cases or a device), unless
            ``forget_classes`` is given. Loaders may yield random crops (patch-based training); evaluation
            then uses whole images from the same loaders unless ``evaluate_fn`` says otherwise.
        forget_classes: segmentation only: forget these label classes. In each forget batch only the voxels
            of these classes take the boundary-search label (``forget_mask = label in forget_classes``); every
            other voxel keeps its own label. With ``stop_at_forget_accuracy`` the forgotten classes' Dice on
            the forget set is compared.
        remain_ignore_forget_classes: with ``forget_classes``, the remain term ignores the voxels of those
            classes (cross-entropy's ``ignore_index``), so it does not teach them back; set ``False`` when the
            remain cases should keep the class (forgetting a class on some cases only).
        evaluate_fn: ``evaluate_fn(model) -> dict`` replaces the built-in evaluation (e.g. a closure over
            whole-image loaders, a sliding-window ROI, or a different metric); its record should be shaped like
            ``evaluate_unlearning``'s or ``evaluate_segmentation``'s.
        roi_size: segmentation only: evaluate with a sliding-window inferer of this ROI.

        checkpoint_dir: folder for a checkpoint written every ``checkpoint_every`` passes (model, optimizer,
            iteration, noise and shuffling generator states, history, a hash of the original model).
        checkpoint_every: passes between checkpoints.
        (distributed) When ``torch.distributed`` is initialised (e.g. under ``torchrun``), the model is wrapped in
            ``DistributedDataParallel``: give each rank its shard of the forget and remain data (a
            ``DistributedSampler``); the search runs on each rank's shard, gradients are averaged, pass losses
            are averaged over ranks, and only rank 0 writes checkpoints. Evaluation gathers the outputs of sharded
            loaders from every rank (``monai_unlearn.distributed.gather_shards``), so all ranks compute the
            metrics of the whole data and take the same early-stopping decision.
        resume: continue from the checkpoint in ``checkpoint_dir`` (if there is one) to the same result as an
            uninterrupted run. Each pass starts a fresh pass over the remain loader, so a pass boundary is a
            complete resume point; random MONAI transforms keep their own generators, which are not restored.
        regime: ``"auto"`` (the default) decides the regime from the data (``monai_unlearn.core.regime``: a
            withdrawn class, partial forgetting, a segmentation class or cases); or name one of ``REGIMES``. The
            run stops at the regime's target, checked every ``check_every`` iterations (default: every pass), with
            ``epochs`` as the budget: the class no longer given to the forget items, or (partial) the original's
            accuracy on held-out items of the same labels (``metrics.calibration``), and with ``rewind`` returns
            to the best state whose held-out accuracy on the kept labels did not fall (``CalibratedStopHandler``).
            The decision and the target are in ``result.stopping``. ``"fixed"`` (or ``None``) runs ``epochs``
            passes, the behaviour before the calibrated stop. ``"auto"`` gives way to an explicit
            ``stop_at_forget_accuracy``, to fixed passes for classification without a remain loader (the
            regime is decided from the kept items' labels), and to fixed passes under ``torch.distributed``
            (not supported there yet: each rank would calibrate and stop on its own shard).
        val_loader: held-out data for the calibration (e.g. a bundle's validation split); without it partial
            forgetting calibrates on the remain loader, which the original was trained on (a warning says so: the
            target is then optimistic).
        check_every: with a ``regime``, check the target every this many iterations instead of every pass.
        rewind: with a ``regime``, return to the best state seen at the end.
        remain_norm_stats: with a ``regime``, a check whose held-out guard fell estimates the batch-norm running
            statistics again from remain batches and checks again (``regime_stop_handler``): the statistics of
            the half-forget unlearning batches may be what lost retention, not the weights.
        margin_z: with a ``regime``, a partial target counts as met within this many standard errors of its sampling
            noise (``monai_unlearn.metrics.calibration.target_margin``; ``result.stopping["calibration"]["margin"]``);
            0 leaves the tolerance of a point alone: a stricter stop, which takes steps where the data cannot show
            that anything is left to forget.

    Returns:
        the revised model and an ``UnlearningResult``.

    Raises:
        ValueError: for an empty forget loader, a batch that does not fit the network, labels outside the
            network's classes, ``phi > 0`` without a remain loader, or an optimizer given without ``inplace``;
            for segmentation, a label map whose shape does not match its image, or a ``forget_classes`` entry
            the network does not output.
    """
    config = config if config is not None else PSGConfig.package_default()
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}.")
    if forget_classes is not None:
        if task != "segmentation":
            raise ValueError("forget_classes forgets a label class voxel by voxel: it needs task='segmentation'.")
        forget_classes = [int(c) for c in forget_classes]
        if not forget_classes:
            raise ValueError("forget_classes is empty; give at least one class or None to forget whole cases.")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    if config.phi > 0 and remain_loader is None:
        raise ValueError("config.phi > 0 needs a remain_loader; pass one or set phi=0.")
    if optimizer is not None and not inplace:
        raise ValueError("an optimizer is bound to the model's parameters: pass inplace=True with it.")
    if resume and checkpoint_dir is None:
        raise ValueError("resume needs the checkpoint_dir of the interrupted run.")
    regime = resolve_regime(regime, stop_at_forget_accuracy, task, remain_loader is not None, is_distributed())
    checkpointer = (UnlearningCheckpointHandler(checkpoint_dir, checkpoint_every, resume)
                    if checkpoint_dir is not None else None)
    if hasattr(forget_loader, "__len__") and len(forget_loader) == 0:  # type: ignore[arg-type]
        raise ValueError("the forget loader is empty: there is nothing to unlearn.")
    device = torch.device(device if device is not None else next(model.parameters()).device)
    revised = model if inplace else copy.deepcopy(model)
    revised.to(device)
    if channels_last:
        revised.to(memory_format=torch.channels_last)
    reference = frozen_reference(revised)
    if optimizer is None:
        optimizer = torch.optim.SGD(revised.parameters(), lr=lr, momentum=momentum)
    trained = revised
    if is_distributed():  # each rank searches and steps on its own shard; DDP averages the gradients
        device_ids = [device.index] if device.type == "cuda" else None
        trained = torch.nn.parallel.DistributedDataParallel(revised, device_ids=device_ids)

    def _evaluate(net: torch.nn.Module) -> dict[str, Any]:
        if evaluate_fn is not None:
            return evaluate_fn(net)
        if task == "segmentation":
            return evaluate_segmentation(
                net, forget_loader, remain_loader, test_loader, num_classes, device, prepare_batch, amp,
                forget_classes=forget_classes, roi_size=roi_size,
            )
        return evaluate_unlearning(
            net, forget_loader, remain_loader, test_loader, num_classes, device, prepare_batch, amp
        )

    _forget_score = forget_scorer(task, forget_loader, num_classes, device, prepare_batch, amp, forget_classes,
                                  roi_size)

    history = UnlearningHistoryHandler()
    metrics = UnlearningMetricsHandler(forget_loader, interval=None, evaluate_fn=_evaluate, network=revised,
                                       retrained_network=retrained_model)
    handlers: list[Any] = [history]  # first: its pass timing must not include the evaluations at epoch end
    stopping: dict[str, Any] | None = None
    calibrated = None
    if regime is not None:  # before the metrics handler: its rewind at the end comes before the final evaluation
        if task == "segmentation":  # the calibration scores the forget set: label maps that do not fit fail first
            image, label = prepare_batch(next(iter(forget_loader)), device, False)[:2]
            validate_first_batch(reference, image, label, "forget", forget_classes)
        calibrated, stopping = regime_stop_handler(
            regime, reference, revised, forget_loader, remain_loader, val_loader, task, forget_classes, device,
            _forget_score, check_every, rewind, prepare_batch=prepare_batch, amp=amp, num_classes=num_classes,
            roi_size=roi_size, remain_norm_stats=remain_norm_stats, margin_z=margin_z)
        handlers.append(calibrated)
    if evaluate:
        handlers.append(metrics)  # before the checkpoint handler: the original is evaluated before a resume
    if stop_at_forget_accuracy is not None:
        handlers += [ForgetScoreHandler(_forget_score, network=revised),
                     ForgetTargetStopper(stop_at_forget_accuracy, metric_name="forget_accuracy")]
    if checkpointer is not None:
        checkpointer.history, checkpointer.network, checkpointer.stop_handler = history, revised, calibrated
        handlers.append(checkpointer)
    trainer = UnlearningTrainer(
        device=device, max_epochs=epochs, forget_data_loader=forget_loader, network=trained, optimizer=optimizer,
        config=config, remain_data_loader=remain_loader, reference=reference, non_blocking=device.type == "cuda",
        prepare_batch=prepare_batch, amp=amp, decollate=False, train_handlers=handlers,
        forget_classes=forget_classes, remain_ignore_forget_classes=remain_ignore_forget_classes,
        channels_last=channels_last,
        # label maps that do not fit fail before any evaluation (a regime's calibration checked the batch already)
        check_at_start=task == "segmentation" and regime is None,
        withdrawn_classes=None if calibrated is None else calibrated.withdrawn_classes,
    )
    if progress and has_progress_bar:
        ProgressBar(persist=False, desc="unlearning").attach(trainer)
    trainer.run()

    result = run_result(trainer, history, metrics, None if stopping is None else {**stopping, **calibrated.record})
    return revised, result

