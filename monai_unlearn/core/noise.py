"""Noise distributions for the perturbed sign-gradient search."""

from __future__ import annotations

import torch

__all__ = ["NOISE_TYPES", "sample_noise"]

NOISE_TYPES = ("normal", "laplace", "cauchy", "uniform")


def sample_noise(
    like: torch.Tensor, distribution: str = "normal", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw standard noise with the shape, dtype and device of ``like``.

    All four distributions are centred at zero with unit scale: ``normal`` N(0, 1), ``laplace`` with scale 1,
    ``cauchy`` with scale 1 (heavy tailed), and ``uniform`` on [-1, 1]. Sampling uses ``generator`` when one
    is given, so a seeded search is reproducible, and never leaves the device.

    Args:
        like: the tensor whose shape, dtype and device the noise takes.
        distribution: one of ``NOISE_TYPES``.
        generator: an optional ``torch.Generator`` on the same device as ``like``.

    Returns:
        the noise tensor.

    Raises:
        ValueError: for an unknown distribution name.
    """
    if distribution == "normal":
        return torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)
    if distribution == "cauchy":
        return torch.empty_like(like).cauchy_(generator=generator)
    uniform = torch.rand(like.shape, dtype=like.dtype, device=like.device, generator=generator) * 2 - 1
    if distribution == "uniform":
        return uniform
    if distribution == "laplace":
        # inverse CDF: -sign(u) * log(1 - |u|) for u uniform on (-1, 1)
        tiny = torch.finfo(like.dtype).tiny
        return -torch.sign(uniform) * torch.log((1 - uniform.abs()).clamp_min(tiny))
    raise ValueError(f"unknown noise distribution {distribution!r}; choose one of {NOISE_TYPES}.")
