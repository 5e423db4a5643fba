"""Checkpoint files of an unlearning run: finding the latest one, reading it safely, recognising the original."""

from __future__ import annotations

import glob
import hashlib
import os
import re
from typing import Any

import torch

__all__ = ["CHECKPOINT_PREFIX", "FORMAT", "checkpoint_path", "latest_checkpoint", "load_checkpoint", "loader_generator",
           "state_dict_sha256"]

#: ``UnlearningCheckpointHandler`` writes ``<folder>/unlearning_checkpoint_<pass>.pt`` (ignite's ``Checkpoint``).
CHECKPOINT_PREFIX = "unlearning"
FORMAT = 2
_PATTERN = re.compile(rf"^{CHECKPOINT_PREFIX}_checkpoint_(\d+)\.pt$")


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


def checkpoint_path(folder: str, passes: int) -> str:
    """Where the checkpoint written after ``passes`` passes lies."""
    return os.path.join(folder, f"{CHECKPOINT_PREFIX}_checkpoint_{int(passes)}.pt")


def latest_checkpoint(folder: str) -> str | None:
    """The path of the checkpoint with the most passes in ``folder``, or ``None`` when there is none."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(folder), f"{CHECKPOINT_PREFIX}_checkpoint_*.pt")):
        match = _PATTERN.match(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def load_checkpoint(folder: str) -> dict[str, Any] | None:
    """The latest checkpoint in ``folder`` (loaded with ``weights_only=True``), or ``None`` when there is none.

    Returns:
        ``{"network", "optimizer", "run", "checkpointer"}``: the state dicts ignite's ``Checkpoint`` saved;
        ``run`` holds the unlearning state (``passes``, generators, history, the original model's hash, ...).

    Raises:
        ValueError: when the file is unreadable or of another format.
    """
    path = latest_checkpoint(folder)
    if path is None:
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read the unlearning checkpoint {path}: {error}") from error
    if not isinstance(state, dict) or not isinstance(state.get("run"), dict) or state["run"].get("format") != FORMAT:
        raise ValueError(f"{path} is not an unlearning checkpoint of format {FORMAT}.")
    return state
