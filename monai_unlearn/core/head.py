"""Revise only a network's head: find the head, and stop gradients at its input while the network runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from monai_unlearn.core.composition import head_prefixes_for

__all__ = ["classification_head", "find_head", "gradients_only_into"]


def classification_head(network: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    """The network's classification head and its name, the head model composition uses (``head_prefixes_for``):
    ``class_layers`` of MONAI's DenseNets, ``fc`` of ``ResNet``, ``_fc`` of ``EfficientNetBN``, ..., and for other
    networks the last module that holds parameters (the final ``Linear`` of a hand-built ``Sequential``).

    Raises:
        ValueError: when the network has no parameters.
    """
    name = head_prefixes_for(network)[0].rstrip(".")
    try:
        return name, network.get_submodule(name)
    except AttributeError:  # the parameters are the network's own (a bare ``Linear``): the network is the head
        return "", network


@contextmanager
def gradients_only_into(layer: torch.nn.Module) -> Iterator[None]:
    """Within the block, ``layer``'s inputs are detached when it runs, so a loss computed from the network's output
    back-propagates into ``layer``'s parameters only (the layers before it get no gradient and an optimizer skips
    them). Nothing about the network is changed after the block."""

    def detach_inputs(module: torch.nn.Module, args: tuple) -> tuple:
        return tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)

    handle = layer.register_forward_pre_hook(detach_inputs)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def _giving_output(network: torch.nn.Module, candidates: dict[str, torch.nn.Module], image: torch.Tensor) -> set[str]:
    """The names of ``candidates`` that run once on ``image`` (one forward, eval mode, mode restored) and return the
    network's output (the first element of a tuple or list output). A head found by name from the order modules were
    registered in may be some other layer of an unusual network: revising it alone would not revise the classifier."""
    seen: dict[str, list] = {}
    hooks = [module.register_forward_hook(lambda m, args, out, key=key: seen.setdefault(key, []).append(out))
             for key, module in candidates.items()]
    was_training = network.training
    network.eval()
    try:
        output = network(image)
    finally:
        for hook in hooks:
            hook.remove()
        network.train(was_training)
    output = output[0] if isinstance(output, (tuple, list)) else output
    return {key for key, outs in seen.items() if len(outs) == 1 and isinstance(outs[0], torch.Tensor)
            and outs[0].shape == output.shape and torch.equal(outs[0], output)}


def find_head(network: torch.nn.Module, image: torch.Tensor) -> tuple[str, torch.nn.Module] | None:
    """The head to revise alone, checked on a batch (one forward): ``classification_head`` when it gives the network's
    output, else the deepest module with parameters that does (MONAI's ``UNet`` with residual units: its last residual
    unit, whose last convolution alone does not, since the unit adds its input back); ``None`` when no module smaller
    than the network gives its output."""
    name, module = classification_head(network)
    candidates = {key: m for key, m in network.named_modules() if key and next(m.parameters(), None) is not None}
    candidates[name] = module
    found = _giving_output(network, candidates, image)
    if name in found:
        return name, module
    found.discard("")
    if not found:
        return None
    deepest = max(found, key=lambda key: key.count("."))
    return deepest, network.get_submodule(deepest)
