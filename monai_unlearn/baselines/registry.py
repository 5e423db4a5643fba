"""One entry point for every unlearning method: ``run_method(name, model, forget_loader, remain_loader, ...)``."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

import torch

from monai_unlearn.baselines.l1_sparse import l1_sparse
from monai_unlearn.baselines.last_k import cf_k, eu_k
from monai_unlearn.baselines.neggrad import neggrad_plus
from monai_unlearn.baselines.retrain import finetune, retrain
from monai_unlearn.baselines.salun import salun
from monai_unlearn.baselines.scrub import scrub
from monai_unlearn.core.batch import default_prepare_batch
from monai_unlearn.core.config import PSGConfig
from monai_unlearn.metrics.evaluation import evaluate_unlearning, summary_rows
from monai_unlearn.metrics.retrain_gap import retrain_gap
from monai_unlearn.runner import UnlearningResult, unlearn

__all__ = ["MethodSpec", "METHODS", "run_method", "method_names"]


@dataclass(frozen=True)
class MethodSpec:
    """An unlearning method in the registry.

    Attributes:
        name: the display name (``UnlearningResult.method``).
        fn: the implementation, ``fn(model, forget_loader, remain_loader, epochs, lr, device, prepare_batch,
            **kwargs) -> (model, iterations, history, parameters)``; ``None`` for the PSG family, which runs
            through ``monai_unlearn.runner.unlearn``.
        needs_forget: whether the method reads the forget set.
        needs_remain: whether the method reads the remain set.
        source: the paper the method follows.
    """

    name: str
    fn: Callable[..., tuple[torch.nn.Module, int, list[dict[str, float]], dict[str, Any]]] | None
    needs_forget: bool
    needs_remain: bool
    source: str


METHODS: dict[str, MethodSpec] = {
    "retrain": MethodSpec("Retrain", retrain, False, True, "exact retraining (Bourtoule et al., S&P 2021)"),
    "finetune": MethodSpec("Fine-tune", finetune, False, True, "Golatkar et al., CVPR 2020"),
    "neggrad_plus": MethodSpec("NegGrad+", neggrad_plus, True, True, "Kurmanji et al., NeurIPS 2023"),
    "cf_k": MethodSpec("CF-k", cf_k, False, True, "Goel et al., arXiv 2201.06640"),
    "eu_k": MethodSpec("EU-k", eu_k, False, True, "Goel et al., arXiv 2201.06640"),
    "scrub": MethodSpec("SCRUB", scrub, True, True, "Kurmanji et al., NeurIPS 2023"),
    "salun": MethodSpec("SalUn", salun, True, True, "Fan et al., ICLR 2024"),
    "l1_sparse": MethodSpec("l1-sparse", l1_sparse, False, True, "Jia et al., NeurIPS 2023"),
    "boundary_shrink": MethodSpec("Boundary Shrink", None, True, False, "Chen et al., CVPR 2023"),
    "psg": MethodSpec("PSG", None, True, False, "Nahass et al., arXiv 2505.21872"),
}
"""Every method by its registry key; ``run_method`` takes the key (or the display name, case-insensitive)."""

_PSG_FIELDS = {f.name for f in fields(PSGConfig)}


def method_names() -> list[str]:
    """The registry keys, in the order of the benchmark tables."""
    return list(METHODS)


def _resolve(name: str) -> str:
    key = name.strip().lower().replace("-", "_").replace(" ", "_").replace("+", "_plus")
    aliases = {"fine_tune": "finetune", "neggrad": "neggrad_plus", "bs": "boundary_shrink"}
    key = aliases.get(key, key)
    if key not in METHODS:
        raise ValueError(f"unknown unlearning method {name!r}; choose one of {list(METHODS)}.")
    return key


def _psg_config(key: str, kwargs: dict[str, Any]) -> PSGConfig:
    config = kwargs.pop("config", None)
    psg_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _PSG_FIELDS}
    if config is not None and psg_kwargs:
        raise ValueError(f"give either config= or PSG parameters {sorted(psg_kwargs)}, not both.")
    if key == "boundary_shrink":
        if config is not None:
            raise ValueError("boundary_shrink builds its own config; pass eps= and value_range= instead.")
        extra = {k: v for k, v in psg_kwargs.items() if k not in ("eps", "value_range", "eps_mode", "seed", "normalize_gradient")}
        if extra:
            raise ValueError(f"Boundary Shrink has no parameters {sorted(extra)}; use method 'psg' for them.")
        return PSGConfig.boundary_shrink(**psg_kwargs)
    return config if config is not None else PSGConfig(**psg_kwargs)


def run_method(
    name: str,
    model: torch.nn.Module,
    forget_loader: Iterable[Any] | None,
    remain_loader: Iterable[Any] | None,
    epochs: int = 1,
    lr: float = 1e-3,
    *,
    device: torch.device | str | None = None,
    prepare_batch: Callable[..., tuple[torch.Tensor, torch.Tensor]] = default_prepare_batch,
    test_loader: Iterable[Any] | None = None,
    retrained_model: torch.nn.Module | None = None,
    num_classes: int | None = None,
    evaluate: bool = True,
    progress: bool = False,
    **kwargs: Any,
) -> tuple[torch.nn.Module, UnlearningResult]:
    """Run any registered unlearning method on a copy of ``model`` and return it with the same record as ``unlearn``.

    PSG and Boundary Shrink go through ``monai_unlearn.runner.unlearn`` (their keyword arguments are
    ``PSGConfig`` fields, or ``config=``; ``momentum``, ``amp``, ``stop_at_forget_accuracy``, ``regime`` and
    ``val_loader`` are passed on). Unlike ``unlearn``, they run ``epochs`` fixed passes unless ``regime`` is given
    (``regime="auto"`` for the package default), so that every method of a comparison runs what it is given.
    The others run their implementation in this package on a deep copy, timed alone; evaluation before and
    after (forget / remain / test accuracy, loss-based MIA of forget vs test) and the gap to ``retrained_model``
    are computed as ``unlearn`` does, so every row of a comparison is measured the same way.

    Args:
        name: registry key (``METHODS``) or display name: ``retrain``, ``finetune``, ``neggrad_plus``, ``cf_k``,
            ``eu_k``, ``scrub``, ``salun``, ``l1_sparse``, ``boundary_shrink``, ``psg``.
        model: the trained network; never modified.
        forget_loader: batches of the forget set.
        remain_loader: batches of the remain set.
        epochs: the method's passes (over the forget set for PSG / Boundary Shrink, over the remain set for the
            others; SCRUB epochs).
        lr: learning rate.
        device: where to run (``None``: the model's device).
        prepare_batch: batch to ``(image, label)``.
        test_loader: held-out batches for evaluation and the MIA.
        retrained_model: a model retrained without the forget set, for the retrain gap.
        num_classes: number of classes for the per-class reports.
        evaluate: evaluate before and after (``False`` for timing runs).
        progress: progress bar (PSG family only).
        **kwargs: the method's own parameters (see each implementation).

    Returns:
        the revised model and an ``UnlearningResult`` whose ``method`` is the display name, ``config`` the
        method's parameters and ``time_s`` the wall time of the method alone.

    Raises:
        ValueError: for an unknown method, a missing loader the method needs, or invalid parameters.
    """
    key = _resolve(name)
    spec = METHODS[key]
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    if spec.needs_forget and forget_loader is None:
        raise ValueError(f"{spec.name} needs a forget_loader.")
    if spec.needs_remain and remain_loader is None:
        raise ValueError(f"{spec.name} needs a remain_loader.")
    if spec.fn is None:
        config = _psg_config(key, kwargs)
        # a method of the comparison runs the passes it is given, as every other method does; Boundary Shrink is
        # always the paper's fixed passes
        if key == "boundary_shrink" and kwargs.get("regime", "fixed") not in (None, "fixed"):
            raise ValueError("Boundary Shrink runs fixed passes; use method 'psg' for a regime.")
        kwargs.setdefault("regime", "fixed")
        revised, result = unlearn(
            model, forget_loader, remain_loader, config=config, epochs=epochs, lr=lr, device=device,
            prepare_batch=prepare_batch, num_classes=num_classes, test_loader=test_loader,
            retrained_model=retrained_model, evaluate=evaluate, progress=progress, **kwargs,
        )
        result.method = spec.name
        return revised, result

    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    eval_forget = forget_loader if forget_loader is not None else []

    def _evaluate(net: torch.nn.Module) -> dict[str, Any]:
        return evaluate_unlearning(net, eval_forget, remain_loader, test_loader, num_classes, device, prepare_batch)

    before = _evaluate(model.to(device)) if evaluate and forget_loader is not None else None
    retrained = (
        _evaluate(retrained_model.to(device)) if evaluate and retrained_model is not None and forget_loader is not None else None
    )
    revised = copy.deepcopy(model).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    revised, iterations, history, params = spec.fn(
        revised, forget_loader, remain_loader, epochs, lr, device, prepare_batch, **kwargs
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    revised.eval()
    after = _evaluate(revised) if evaluate and forget_loader is not None else None
    gap = None
    if after is not None and retrained is not None:
        gap = retrain_gap(summary_rows(after), summary_rows(retrained))
    optimizer_record = {"name": params.pop("optimizer", "sgd"), "lr": lr}
    for field_name in ("momentum", "weight_decay"):
        if field_name in params:
            optimizer_record[field_name] = params.pop(field_name)
    result = UnlearningResult(
        method=spec.name,
        config={"method": key, "source": spec.source, **params},
        optimizer=optimizer_record,
        epochs=epochs,
        iterations=iterations,
        time_s=elapsed,
        before=before,
        after=after,
        retrained=retrained,
        retrain_gap=gap,
        history=history,
    )
    return revised, result
