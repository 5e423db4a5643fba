"""The Python entry point: unlearn a forget set from a trained model in one call, with evidence."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from monai_unlearn.checkpoint import load_checkpoint, loader_generator, save_checkpoint, state_dict_sha256
from monai_unlearn.core.batch import default_prepare_batch, label_index_for_image
from monai_unlearn.core.boundary_search import frozen_reference
from monai_unlearn.core.config import PSGConfig
from monai_unlearn.core.unlearner import PSGUnlearner, check_labels
from monai_unlearn.distributed import is_distributed, is_writer
from monai_unlearn.metrics.evaluation import evaluate_unlearning, summary_rows
from monai_unlearn.metrics.retrain_gap import retrain_gap
from monai_unlearn.metrics.segmentation import evaluate_segmentation, is_segmentation_evaluation, segmentation_summary_rows

__all__ = [
    "UnlearningResult",
    "unlearn",
    "method_name",
    "cycle",
    "validate_first_batch",
    "format_table",
    "headline_rows",
    "forget_score",
    "class_mask",
    "TASKS",
]

#: the tasks ``unlearn`` evaluates: accuracy for classification, Dice for segmentation.
TASKS = ("classification", "segmentation")
#: the label value cross-entropy ignores (PyTorch's default ``ignore_index``).
IGNORE_INDEX = -100


def headline_rows(evaluation: dict[str, Any]) -> dict[str, float | None]:
    """The headline numbers of an evaluation: ``summary_rows`` (accuracy) or ``segmentation_summary_rows`` (Dice)."""
    if is_segmentation_evaluation(evaluation):
        return segmentation_summary_rows(evaluation)
    return summary_rows(evaluation)


def forget_score(evaluation: dict[str, Any]) -> float | None:
    """The forget-set score a stopping rule compares: forget accuracy, or the forget Dice for segmentation."""
    rows = headline_rows(evaluation)
    return rows.get("forget_acc", rows.get("forget_dice"))


def class_mask(label_index: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the elements of ``label_index`` whose class is one of ``classes`` (on the same device)."""
    return torch.isin(label_index, classes)

logger = logging.getLogger(__name__)


@dataclass
class UnlearningResult:
    """The record of one unlearning run.

    Attributes:
        method: ``"PSG"`` or ``"Boundary Shrink"``.
        config: the PSG parameters.
        optimizer: the optimizer's class and hyper-parameters.
        epochs: passes over the forget set that ran.
        iterations: unlearning steps that ran.
        time_s: wall time of the unlearning steps alone (evaluation excluded).
        before: ``evaluate_unlearning`` of the original model (``None`` when evaluation was off).
        after: the same for the revised model.
        retrained: the same for a retrained model, when one was given.
        retrain_gap: absolute differences between ``after`` and ``retrained`` headline numbers.
        history: per-epoch mean losses and boundary flip rates.
    """

    method: str
    config: dict[str, Any]
    optimizer: dict[str, Any]
    epochs: int
    iterations: int
    time_s: float
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    retrained: dict[str, Any] | None = None
    retrain_gap: dict[str, float] | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-serialisable dictionary."""
        return asdict(self)

    def table(self) -> str:
        """A plain-text before/after table of the headline numbers."""
        rows = {}
        for name in ("before", "after", "retrained"):
            evaluation = getattr(self, name)
            if evaluation is not None:
                rows[name] = headline_rows(evaluation)
        return format_table(rows)


def format_table(rows: dict[str, dict[str, float | None]]) -> str:
    """Format ``{row name: {column: value}}`` as an aligned text table (``-`` for missing values)."""
    if not rows:
        return ""
    columns = list(next(iter(rows.values())))
    width = max(len(name) for name in rows) + 2
    cell = {c: max(11, len(c) + 2) for c in columns}
    lines = ["".ljust(width) + "".join(c.rjust(cell[c]) for c in columns)]
    for name, values in rows.items():
        cells = "".join(("-" if values.get(c) is None else f"{values[c]:.3f}").rjust(cell[c]) for c in columns)
        lines.append(name.ljust(width) + cells)
    return "\n".join(lines)


def method_name(config: PSGConfig) -> str:
    """``"Boundary Shrink"`` for the one-step, noise-free, proximity-free special case, else ``"PSG"``."""
    plain = config.num_steps == 1 and config.gamma == 0 and config.lam == 0 and config.phi == 0
    return "Boundary Shrink" if plain and config.first_step_size == config.eps and config.target == "hard" else "PSG"


def cycle(loader: Iterable[Any]) -> Iterator[Any]:
    """Iterate ``loader`` forever, starting a new pass (and a new shuffle) whenever one ends."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the remain loader yielded no batches.")


def validate_first_batch(
    reference: torch.nn.Module,
    image: torch.Tensor,
    label: torch.Tensor,
    what: str,
    forget_classes: Sequence[int] | None = None,
) -> None:
    """Check once, before the loop, that a batch fits the network: its shape, and labels within the classes.

    For segmentation outputs ``(B, C, *S)`` the label map must have the output's spatial shape, and any
    ``forget_classes`` must be classes the network outputs.

    Raises:
        ValueError: naming the batch (``what``) and the problem.
    """
    try:
        with torch.no_grad():
            logits = reference(image[:2])
    except RuntimeError as error:
        raise ValueError(
            f"the network cannot process the {what} images of shape {tuple(image.shape)}: {error}"
        ) from error
    if label.shape[0] != image.shape[0]:
        raise ValueError(f"{what} batch has {image.shape[0]} images but {label.shape[0]} labels.")
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"the {what} images contain NaN or infinite values; fix or drop those images.")
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    num_classes = logits.shape[1]
    if forget_classes is not None:
        bad = [int(c) for c in forget_classes if not 0 <= int(c) < num_classes]
        if bad:
            raise ValueError(
                f"cannot forget class(es) {bad}: the network outputs {num_classes} classes (0..{num_classes - 1})."
            )
    label_index = label_index_for_image(label, image)
    if logits.ndim > 2 and tuple(label_index.shape[1:]) != tuple(logits.shape[2:]):
        raise ValueError(
            f"the {what} label maps have spatial shape {tuple(label_index.shape[1:])} (labels {tuple(label.shape)}), "
            f"which does not match the images' {tuple(image.shape[2:])} / the network output's "
            f"{tuple(logits.shape[2:])}: each label map must have its image's size."
        )
    check_labels(logits, label_index, what=f"{what} labels")


def unlearn(
    model: torch.nn.Module,
    forget_loader: Iterable[Any],
    remain_loader: Iterable[Any] | None = None,
    config: PSGConfig | None = None,
    epochs: int = 10,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
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
) -> tuple[torch.nn.Module, UnlearningResult]:
    """Unlearn the forget set from ``model`` with PSG and return the revised model and its record.

    Runs ``epochs`` passes over ``forget_loader``; each forget batch is paired with the next remain batch
    (the remain loader is cycled) when ``config.phi > 0``. Before and after, the model is evaluated on the
    forget, remain and test loaders, with the membership-inference score of the forget set against the test
    set; a ``retrained_model`` (trained without the forget set) is evaluated the same way and the gap reported.

    Args:
        model: the trained network. Left untouched unless ``inplace``.
        forget_loader: batches of the data to forget.
        remain_loader: batches of the data to keep (needed when ``config.phi > 0``; used for evaluation).
        config: PSG parameters; ``PSGConfig()`` when ``None``.
        epochs: passes over the forget set.
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

    Returns:
        the revised model and an ``UnlearningResult``.

    Raises:
        ValueError: for an empty forget loader, a batch that does not fit the network, labels outside the
            network's classes, ``phi > 0`` without a remain loader, or an optimizer given without ``inplace``;
            for segmentation, a label map whose shape does not match its image, or a ``forget_classes`` entry
            the network does not output.
    """
    config = config if config is not None else PSGConfig()
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
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    revised = model if inplace else copy.deepcopy(model)
    revised.to(device)
    if channels_last:
        revised.to(memory_format=torch.channels_last)
    reference = frozen_reference(revised)
    non_blocking = device.type == "cuda"

    def to_device(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = prepare_batch(batch, device, non_blocking)
        if channels_last and image.ndim == 4:
            image = image.contiguous(memory_format=torch.channels_last)
        return image, label

    if optimizer is None:
        optimizer = torch.optim.SGD(revised.parameters(), lr=lr, momentum=momentum)
    try:
        num_batches = len(forget_loader)  # type: ignore[arg-type]
    except TypeError:
        num_batches = None
    if num_batches == 0:
        raise ValueError("the forget loader is empty: there is nothing to unlearn.")
    total = None if num_batches is None else num_batches * epochs
    distributed = is_distributed()
    trained = revised
    if distributed:  # each rank searches and steps on its own shard; DDP averages the gradients
        device_ids = [device.index] if device.type == "cuda" else None
        trained = torch.nn.parallel.DistributedDataParallel(revised, device_ids=device_ids)
    unlearner = PSGUnlearner(trained, optimizer, config, reference=reference, amp=amp, total_iterations=total)

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

    classes_tensor = None if forget_classes is None else torch.as_tensor(forget_classes, device=device)

    if task == "segmentation":  # fail early, before any evaluation, on label maps or classes that do not fit
        first_image, first_label = prepare_batch(next(iter(forget_loader)), device, False)
        validate_first_batch(reference, first_image, first_label, "forget", forget_classes)
    before = _evaluate(reference) if evaluate else None
    retrained = _evaluate(retrained_model.to(device)) if (evaluate and retrained_model is not None) else None

    history: list[dict[str, float]] = []
    checked = False
    elapsed = 0.0
    epochs_run = 0
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}.")
    if resume and checkpoint_dir is None:
        raise ValueError("resume needs the checkpoint_dir of the interrupted run.")
    original_sha = state_dict_sha256(reference) if checkpoint_dir is not None else None
    generators = {"forget": loader_generator(forget_loader), "remain": loader_generator(remain_loader)}
    saved = load_checkpoint(checkpoint_dir) if resume else None
    if saved is not None:
        if saved["reference_sha256"] != original_sha:
            raise ValueError(f"the checkpoint in {checkpoint_dir} was made from another original model; "
                             "start a new run or point checkpoint_dir elsewhere.")
        if saved["config"] != config.to_dict():
            raise ValueError(f"the checkpoint in {checkpoint_dir} used other PSG parameters: {saved['config']}.")
        revised.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        unlearner.iteration = saved["iteration"]
        unlearner.search.restore_generator_state(saved["search_generator"], device)
        torch.set_rng_state(saved["torch_rng"])
        for name, generator in generators.items():
            if generator is not None and saved["loader_generators"].get(name) is not None:
                generator.set_state(saved["loader_generators"][name])
        history, elapsed, epochs_run = list(saved["history"]), float(saved["elapsed"]), int(saved["passes"])
        checked = True
        logger.info("resuming from pass %d of %d (%s)", epochs_run, epochs, checkpoint_dir)
    bar = tqdm(total=total, initial=0 if total is None else min(total, epochs_run * (num_batches or 0)),
               desc="unlearning", unit="it", disable=not progress)
    for epoch in range(epochs_run, epochs):
        for sharded in (forget_loader, remain_loader):  # DistributedSamplers shuffle anew each pass
            if hasattr(getattr(sharded, "sampler", None), "set_epoch"):
                sharded.sampler.set_epoch(epoch)
        remain_iter = iter(remain_loader) if config.phi > 0 else None  # a fresh remain pass with each forget pass
        sums: dict[str, torch.Tensor] = {}
        count = 0
        start = time.perf_counter()
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        for batch in forget_loader:
            forget_image, forget_label = to_device(batch)
            remain_image = remain_label = None
            if remain_iter is not None:
                remain_batch = next(remain_iter, None)
                if remain_batch is None:  # the remain set is smaller than the forget set: start it again
                    remain_iter = iter(remain_loader)
                    remain_batch = next(remain_iter, None)
                    if remain_batch is None:
                        raise ValueError("the remain loader yielded no batches.")
                remain_image, remain_label = to_device(remain_batch)
            if not checked:
                validate_first_batch(reference, forget_image, forget_label, "forget", forget_classes)
                if remain_image is not None:
                    validate_first_batch(reference, remain_image, remain_label, "remain")
                checked = True
            forget_mask = None
            if classes_tensor is not None:
                forget_label = label_index_for_image(forget_label, forget_image)
                forget_mask = class_mask(forget_label, classes_tensor)
                if remain_label is not None and remain_ignore_forget_classes:
                    remain_label = label_index_for_image(remain_label, remain_image)
                    remain_label = remain_label.masked_fill(class_mask(remain_label, classes_tensor), IGNORE_INDEX)
            nonfinite = nonfinite | ~torch.isfinite(forget_image).all()  # stays on the device: no sync here
            if remain_image is not None:
                nonfinite = nonfinite | ~torch.isfinite(remain_image).all()
            out = unlearner.step(forget_image, forget_label, remain_image, remain_label, forget_mask)
            for key in ("loss", "forget_loss", "remain_loss", "flip_rate"):
                sums[key] = sums.get(key, 0.0) + out[key]
            count += 1
            bar.update(1)
        if count == 0:
            raise ValueError("the forget loader yielded no batches: there is nothing to unlearn.")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed += time.perf_counter() - start
        epochs_run = epoch + 1
        if distributed:  # pass means over all ranks, and any rank's non-finite input stops every rank
            stacked = torch.stack([torch.as_tensor(sums[k], device=device, dtype=torch.float32) / count for k in sums])
            torch.distributed.all_reduce(stacked)
            sums = dict(zip(sums, stacked / torch.distributed.get_world_size()))
            flag = nonfinite.to(torch.float32)
            torch.distributed.all_reduce(flag)
            nonfinite, count = flag > 0, 1
        record = {"epoch": epochs_run, **{k: float(v) / count for k, v in sums.items()}}
        history.append(record)
        if bool(nonfinite):
            raise ValueError(
                f"images with NaN or infinite values reached unlearning in pass {epochs_run}; fix or drop them. "
                "Nothing was written."
            )
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(
                f"unlearning diverged: the loss became {record['loss']} in pass {epochs_run}. Lower the learning "
                "rate (or phi); nothing was written."
            )
        if epochs_run == 1 and record["flip_rate"] == 0.0:
            logger.warning(
                "the boundary search crossed no decision boundary in the first pass (flip rate 0): the forget "
                "targets equal the true labels and nothing will be forgotten. Increase eps or num_steps."
            )
        bar.set_postfix(loss=f"{record['loss']:.3f}", flip=f"{record['flip_rate']:.2f}")
        if stop_at_forget_accuracy is not None:
            if task == "segmentation":
                forget_eval = evaluate_segmentation(revised, forget_loader, None, None, num_classes, device,
                                                    prepare_batch, amp, forget_classes=forget_classes, roi_size=roi_size)
                record["forget_accuracy"] = forget_score(forget_eval)
            else:
                forget_acc = evaluate_unlearning(revised, forget_loader, None, None, num_classes, device, prepare_batch, amp)
                record["forget_accuracy"] = forget_acc["forget"]["accuracy"]
            stop = record["forget_accuracy"] <= stop_at_forget_accuracy
        else:
            stop = False
        if is_writer() and checkpoint_dir is not None and (epochs_run % checkpoint_every == 0 or epochs_run == epochs or stop):
            save_checkpoint(checkpoint_dir, {
                "passes": epochs_run, "model": revised.state_dict(), "optimizer": optimizer.state_dict(),
                "iteration": unlearner.iteration, "search_generator": unlearner.search.generator_state(),
                "torch_rng": torch.get_rng_state(), "history": history, "elapsed": elapsed,
                "loader_generators": {k: (g.get_state() if g is not None else None) for k, g in generators.items()},
                "reference_sha256": original_sha, "config": config.to_dict(),
            })
        if stop:
            logger.info("forget accuracy %.3f reached the target after %d epochs", record["forget_accuracy"], epochs_run)
            break
    bar.close()

    after = _evaluate(revised) if evaluate else None
    gap = None
    if after is not None and retrained is not None:
        gap = retrain_gap(headline_rows(after), headline_rows(retrained))
    optimizer_record = {"name": type(optimizer).__name__, **{
        k: v for k, v in optimizer.defaults.items() if isinstance(v, (int, float, bool, str))
    }}
    result = UnlearningResult(
        method=method_name(config),
        config=config.to_dict(),
        optimizer=optimizer_record,
        epochs=epochs_run,
        iterations=unlearner.iteration,
        time_s=elapsed,
        before=before,
        after=after,
        retrained=retrained,
        retrain_gap=gap,
        history=history,
    )
    return revised, result
