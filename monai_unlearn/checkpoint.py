"""Checkpoints of an unlearning run, so a long run can stop and resume to the same result."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from typing import Any

import torch

from monai_unlearn.io import atomic_write_bytes

__all__ = ["CHECKPOINT_NAME", "state_dict_sha256", "save_checkpoint", "load_checkpoint", "loader_generator"]

CHECKPOINT_NAME = "unlearning_checkpoint.pt"
FORMAT = 1


def state_dict_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over a module's state dict (names, shapes, dtypes and values), to recognise the original model."""
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def loader_generator(loader: Any) -> torch.Generator | None:
    """The ``torch.Generator`` a data loader shuffles with, when it has its own."""
    generator = getattr(loader, "generator", None)
    if generator is None:
        generator = getattr(getattr(loader, "sampler", None), "generator", None)
    return generator if isinstance(generator, torch.Generator) else None


def save_checkpoint(folder: str, state: Mapping[str, Any]) -> str:
    """Write ``state`` to ``folder/unlearning_checkpoint.pt`` atomically (a crash never leaves half a file)."""
    os.makedirs(folder, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    path = os.path.join(folder, CHECKPOINT_NAME)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_checkpoint(folder: str) -> dict[str, Any] | None:
    """The checkpoint in ``folder`` (loaded with ``weights_only=True``), or ``None`` when there is none.

    Raises:
        ValueError: when the file is unreadable or of another format.
    """
    path = os.path.join(folder, CHECKPOINT_NAME)
    if not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read the unlearning checkpoint {path}: {error}") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not an unlearning checkpoint of format {FORMAT}.")
    return state
