"""Revise only a network's head: find the head, and stop gradients at its input while the network runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from monai_unlearn.core.composition import head_prefixes_for

__all__ = ["classification_head", "find_head", "gradients_only_into", "head_gives_output"]


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
def head_gives_output(network: torch.nn.Module, head: torch.nn.Module, image: torch.Tensor) -> bool:
    """Whether ``head`` runs once on ``image`` and what it returns is the network's output (the first element of a
    tuple or list output): a head found by name from the order modules were registered in may be some other layer
    of an unusual network, and revising it alone would not be revising the classifier."""
    seen: list = []
    handle = head.register_forward_hook(lambda module, args, out: seen.append(out))
    was_training = network.training
    network.eval()
    try:
        output = network(image)
    finally:
        handle.remove()
        network.train(was_training)
    output = output[0] if isinstance(output, (tuple, list)) else output
    return (len(seen) == 1 and isinstance(seen[0], torch.Tensor) and seen[0].shape == output.shape
            and torch.equal(seen[0], output))


@torch.no_grad()
def find_head(network: torch.nn.Module, image: torch.Tensor) -> tuple[str, torch.nn.Module] | None:
    """The head to revise alone, checked on a batch: ``classification_head`` when it gives the network's output,
    else the deepest module with parameters that does (MONAI's ``UNet`` with residual units: its last residual unit,
    whose last convolution alone does not, since the unit adds its input back); ``None`` when no module smaller than
    the network gives its output."""
    name, module = classification_head(network)
    if head_gives_output(network, module, image):
        return name, module
    seen: dict[str, list] = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, key=key: seen.setdefault(key, []).append(out))
             for key, m in network.named_modules() if key and next(m.parameters(), None) is not None]
    was_training = network.training
    network.eval()
    try:
        output = network(image)
    finally:
        for hook in hooks:
            hook.remove()
        network.train(was_training)
    output = output[0] if isinstance(output, (tuple, list)) else output
    found = [key for key, outs in seen.items() if len(outs) == 1 and isinstance(outs[0], torch.Tensor)
             and outs[0].shape == output.shape and torch.equal(outs[0], output)]
    if not found:
        return None
    deepest = max(found, key=lambda key: key.count("."))
    return deepest, network.get_submodule(deepest)
