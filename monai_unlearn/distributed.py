"""Helpers for running under ``torchrun``: process group set-up, per-rank devices and samplers, gathering shards.

Unlearning on several processes follows MONAI's multi-GPU bundles: each rank steps on its own shard of the
forget and remain sets (``DistributedSampler``, evenly divisible so that every rank takes the same number of
steps), DDP averages the gradients, and evaluation runs each rank on an uneven shard whose outputs are then
gathered back into the order of the dataset, so every rank computes the same metrics as a single process would.
Only rank 0 writes files.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "is_distributed",
    "rank",
    "world_size",
    "is_writer",
    "init_distributed",
    "finish_distributed",
    "rank_device",
    "distributed_sampler",
    "gather_shards",
    "barrier",
]


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_writer() -> bool:
    """Only rank 0 (or a single process) writes checkpoints, bundles and reports."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def init_distributed(backend: str | None = None) -> bool:
    """Initialise the process group from ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...).

    Args:
        backend: ``"nccl"`` or ``"gloo"``; ``None`` picks NCCL when CUDA is available, else gloo.

    Returns:
        whether a process group is initialised afterwards (``False`` when not launched by ``torchrun``, so the
        same config also runs as a single process).
    """
    if is_distributed():
        return True
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return True


def finish_distributed() -> None:
    """Wait for every rank, then destroy the process group (a no-op outside ``torchrun``)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def rank_device(device: torch.device | str) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when ``device`` is a CUDA device and a group is initialised."""
    device = torch.device(device)
    if device.type == "cuda" and is_distributed():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank() % torch.cuda.device_count())))
        torch.cuda.set_device(device)
    return device


def distributed_sampler(dataset: Any, shuffle: bool, even: bool, seed: int = 0) -> torch.utils.data.Sampler:
    """MONAI's ``DistributedSampler`` for this rank.

    Args:
        dataset: the whole dataset (every rank sees the same list).
        shuffle: shuffle with ``seed`` (and the pass number, via ``set_epoch``).
        even: pad to equal shard sizes (for the unlearning steps, so DDP ranks stay in step); ``False`` gives
            uneven shards without repeated items (for evaluation, followed by :func:`gather_shards`).
        seed: the shuffling seed, identical on every rank.
    """
    from monai.data import DistributedSampler

    return DistributedSampler(dataset, even_divisible=even, shuffle=shuffle, seed=seed)


def _sharded_sampler(loader: Any) -> Any:
    sampler = getattr(loader, "sampler", None)
    return sampler if isinstance(sampler, torch.utils.data.DistributedSampler) else None


def _all_gather_rows(local: torch.Tensor, counts: list[int], device: torch.device) -> torch.Tensor:
    """Every rank's ``local`` concatenated in rank order; ``counts``: each rank's number of rows."""
    padded = torch.zeros((max(counts), *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts)])


def gather_shards(loader: Any, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gather per-rank outputs of a sharded loader back into the dataset's order, on every rank.

    Each rank's outputs are paired with the dataset indices its ``DistributedSampler`` yielded (the loader
    visits them in that order), so shuffled and padded samplers are handled too: items repeated to pad an
    evenly divisible sampler are written twice with the same value. Tensors of loaders without such a sampler,
    or outside a process group, are returned unchanged.
    """
    sampler = _sharded_sampler(loader)
    if sampler is None or not is_distributed():
        return tensors
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = len(sampler.dataset)
    count = tensors[0].shape[0] if tensors else 0
    indices = torch.as_tensor(list(iter(sampler)), dtype=torch.long)[:count]  # a loader may drop its last batch
    local_count = torch.tensor([count], device=device)
    all_counts = [torch.zeros_like(local_count) for _ in range(world_size())]
    dist.all_gather(all_counts, local_count)
    counts = [int(c.item()) for c in all_counts]
    all_indices = _all_gather_rows(indices, counts, device).cpu()
    seen = torch.zeros(total, dtype=torch.bool)
    seen[all_indices] = True  # only items some rank evaluated (all, unless a loader dropped its last batch)
    out = []
    for tensor in tensors:
        merged = torch.zeros((total, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        merged[all_indices.to(tensor.device)] = _all_gather_rows(tensor, counts, device).to(tensor.device)
        out.append(merged[seen.to(tensor.device)])
    return tuple(out)
