"""Considered on 2026-12-08 for a real-data test of the partial target's margin, and not used: a random tenth of
scikit-learn's digits training set (140 of 1,400 images, three draws) forgotten from the small CNN of
``tests/test_runner.py``. From the repository root:

    python benchmarks/tried/digits_random_tenth_margin.py

Prints per draw the regime, the original's forget accuracy, the held-out target and its margin. That model recognises
its training images no better than held-out ones, so the original meets the target with or without the margin, and
such a test would not exercise it.
"""

import copy
import os
import sys

import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from monai_unlearn.handlers import regime_stop_handler  # noqa: E402
from tests.test_runner import train  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train_idx, held_out_idx = order[:1400], order[1400:]  # the split of tests/test_runner.py
    model = train(images[train_idx], labels[train_idx])
    for draw in (0, 1, 2):
        pick = torch.randperm(1400, generator=torch.Generator().manual_seed(draw))
        forget, remain = train_idx[pick[:140]], train_idx[pick[140:]]

        def loader(idx):
            return DataLoader(TensorDataset(images[idx], labels[idx]), 64)

        def forget_accuracy(net):
            return float((net(images[forget]).argmax(1) == labels[forget]).float().mean())

        _, record = regime_stop_handler("auto", model, copy.deepcopy(model), loader(forget), loader(remain),
                                        loader(held_out_idx), "classification", None, "cpu", forget_accuracy)
        calibration = record["calibration"]
        print(f"draw {draw}: regime {record['regime']['regime']}, forget accuracy {forget_accuracy(model):.3f}, "
              f"target {calibration['target']:.3f}, margin {calibration['margin']:.3f}")


if __name__ == "__main__":
    main()
