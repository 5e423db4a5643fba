"""Model composition: the feature extractor of one unlearning run with the classification head of another."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable

import torch

from monai_unlearn.core.batch import default_prepare_batch, label_index_for_image

__all__ = ["HEAD_PREFIXES", "head_prefixes_for", "compose_state_dicts", "compose_models", "finetune_on_remain"]

# Parameter-name prefixes of the classification head of MONAI networks (as in their state dicts).
HEAD_PREFIXES: dict[str, tuple[str, ...]] = {
    "DenseNet": ("class_layers.",),
    "DenseNet121": ("class_layers.",),
    "DenseNet169": ("class_layers.",),
    "DenseNet201": ("class_layers.",),
    "DenseNet264": ("class_layers.",),
    "ResNet": ("fc.",),
    "SENet": ("last_linear.",),
    "SEResNet50": ("last_linear.",),
    "SEResNet101": ("last_linear.",),
    "SEResNext50": ("last_linear.",),
    "EfficientNet": ("_fc.",),
    "EfficientNetBN": ("_fc.",),
    "Classifier": ("final.",),
}


def head_prefixes_for(model: torch.nn.Module) -> tuple[str, ...]:
    """The head's parameter prefixes for a known MONAI network class, else the last module that holds weights.

    Raises:
        ValueError: when the model has no parameters.
    """
    for cls in type(model).__mro__:
        if cls.__name__ in HEAD_PREFIXES:
            return HEAD_PREFIXES[cls.__name__]
    names = [name for name, _ in model.named_parameters()]
    if not names:
        raise ValueError("the model has no parameters to compose.")
    last_module = names[-1].rsplit(".", 1)[0]
    return (last_module + ".",)


def _is_head(name: str, prefixes: Sequence[str]) -> bool:
    return any(name.startswith(p) for p in prefixes)


def compose_state_dicts(
    features: Mapping[str, torch.Tensor], head: Mapping[str, torch.Tensor], head_prefixes: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Entries whose names start with a head prefix come from ``head``, all others from ``features``.

    Raises:
        ValueError: when the two state dicts have different keys or shapes, or no key matches a head prefix.
    """
    if set(features) != set(head):
        diff = sorted(set(features) ^ set(head))[:5]
        raise ValueError(f"the two models have different parameters (e.g. {diff}): they must share an architecture.")
    for name in features:
        if features[name].shape != head[name].shape:
            raise ValueError(f"parameter {name} differs in shape: {tuple(features[name].shape)} vs {tuple(head[name].shape)}.")
    if not any(_is_head(n, head_prefixes) for n in features):
        raise ValueError(f"no parameter starts with the head prefixes {list(head_prefixes)}; name them explicitly.")
    return {n: (head[n] if _is_head(n, head_prefixes) else features[n]).clone() for n in features}


def compose_models(
    feature_model: torch.nn.Module, head_model: torch.nn.Module, head_prefixes: Sequence[str] | None = None
) -> torch.nn.Module:
    """A new model with ``feature_model``'s feature extractor and ``head_model``'s head.

    Typical use: the feature extractor of the run that kept the remain set best and the head of the run that
    forgot best. Batch-norm statistics follow their parameters' side.

    Args:
        feature_model: supplies every parameter and buffer outside the head.
        head_model: supplies the head.
        head_prefixes: parameter-name prefixes of the head; detected from the network class when ``None``.

    Returns:
        a deep copy of ``feature_model`` with the composed weights.
    """
    prefixes = tuple(head_prefixes) if head_prefixes else head_prefixes_for(feature_model)
    composed = copy.deepcopy(feature_model)
    composed.load_state_dict(compose_state_dicts(feature_model.state_dict(), head_model.state_dict(), prefixes))
    return composed


def finetune_on_remain(
    model: torch.nn.Module,
    remain_loader: Iterable[Any],
    epochs: int = 1,
    lr: float = 1e-3,
    head_only: bool = True,
    head_prefixes: Sequence[str] | None = None,
    device: torch.device | str | None = None,
    prepare_batch: Callable[..., tuple[torch.Tensor, torch.Tensor]] = default_prepare_batch,
) -> torch.nn.Module:
    """Fine-tune a composed model on the remain set with cross-entropy: the head only, or the whole model.

    With ``head_only`` the feature extractor is frozen and kept in eval mode, so its weights and batch-norm
    statistics stay exactly as composed.

    Returns:
        ``model``, updated in place.
    """
    prefixes = tuple(head_prefixes) if head_prefixes else head_prefixes_for(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    params = [p for n, p in model.named_parameters() if not head_only or _is_head(n, prefixes)]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    frozen = {n: p.requires_grad for n, p in model.named_parameters()}
    if head_only:
        for name, param in model.named_parameters():
            param.requires_grad_(_is_head(name, prefixes))
    try:
        for _ in range(epochs):
            model.eval() if head_only else model.train()
            for batch in remain_loader:
                image, label = prepare_batch(batch, device, False)
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(image), label_index_for_image(label, image))
                loss.backward()
                optimizer.step()
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(frozen[name])
    model.eval()
    return model
