"""AllCNN (Springenberg et al., ICLR 2015 workshop), in the layout the Boundary Shrink / PSG code uses.

The unlearning literature (Golatkar et al. 2020, Chen et al. 2023, Nahass et al. 2025) trains the "All
Convolutional Net" with batch norm on FashionMNIST: eight 3x3/1x1 conv blocks (Conv-BN-ReLU), two of them
strided, dropout after each stride, global average pooling and a linear classifier. ``width=1.0`` is that
network (96/192 filters). ``width < 1`` scales every filter count: the **narrow CPU variant** used by the
benchmarks here is ``width=0.25`` (24/48 filters), labelled as such in every result.

Each top-level child with parameters is one "block" (``conv1`` ... ``conv8``, ``classifier``), which is what
CF-k and EU-k count from the end.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AllCNN", "allcnn"]


def _block(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class AllCNN(nn.Module):
    """AllCNN with batch norm.

    Args:
        in_channels: image channels (1 for FashionMNIST).
        num_classes: output classes.
        width: multiplier of the filter counts (1.0: 96/192 as published; 0.25: the narrow CPU variant).
        dropout: dropout probability after each strided block (0 disables it).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        c1, c2 = max(1, int(round(96 * width))), max(1, int(round(192 * width)))
        self.conv1 = _block(in_channels, c1)
        self.conv2 = _block(c1, c1)
        self.conv3 = _block(c1, c1, stride=2)
        self.drop1 = nn.Dropout(dropout)
        self.conv4 = _block(c1, c2)
        self.conv5 = _block(c2, c2)
        self.conv6 = _block(c2, c2, stride=2)
        self.drop2 = nn.Dropout(dropout)
        self.conv7 = _block(c2, c2)
        self.conv8 = _block(c2, c2, kernel=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(c2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x


def allcnn(width: float = 0.25, num_classes: int = 10, in_channels: int = 1) -> AllCNN:
    """The AllCNN the benchmarks use (narrow CPU variant by default)."""
    return AllCNN(in_channels=in_channels, num_classes=num_classes, width=width)
