"""Loading a bundle's weights safely, with errors that say what is wrong."""

from __future__ import annotations

import os
import pickle

import torch

__all__ = ["load_bundle_weights"]

_NESTED_KEYS = ("model", "state_dict", "network")


def load_bundle_weights(network: torch.nn.Module, path: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Load the weights at ``path`` into ``network`` with ``weights_only=True``.

    Accepts a plain state dict or one nested under ``"model"``, ``"state_dict"`` or ``"network"`` (as
    MONAI's ``CheckpointSaver`` writes). A file that needs arbitrary code to unpickle is refused.

    Args:
        network: the bundle's network, already built.
        path: the checkpoint file, usually ``<bundle>/models/model.pt``.
        device: where to map the tensors.

    Returns:
        ``network`` with the weights loaded.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not a safe weights file, or its weights do not fit the network.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"the bundle has no weights at {path}. Train it first or point `--unlearn_ckpt` at the checkpoint."
        )
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} is not a plain weights file: loading it would execute code, which `weights_only=True` "
            f"refuses. Re-save it as a state dict (torch.save(model.state_dict(), path)). Detail: {error}"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"cannot read the checkpoint {path}: it is truncated or not a PyTorch file ({error}).") from error
    if isinstance(checkpoint, dict):
        for key in _NESTED_KEYS:
            if key in checkpoint and isinstance(checkpoint[key], dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors.")
    try:
        network.load_state_dict(checkpoint, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"the weights in {path} do not fit the bundle's network (another architecture?): {error}"
        ) from error
    return network
