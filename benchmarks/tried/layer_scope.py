"""Tried on 2026-12-08 before the head change, not kept: which layers a withdrawn class's PSG run revises.

Run on the package of commit 1b21c0b (before ``PSGConfig.withdrawn_scope``), from the repository root, on the
scenario benchmark's cached models; it wraps ``benchmarks/probe_default.py`` (same arguments) and changes the
optimizer or the frozen layers at the first step:

    LAST_BLOCKS=3 python benchmarks/tried/layer_scope.py fmnist_class0 S   # only the last 3 blocks revised
    LAST_BLOCKS=1 python benchmarks/tried/layer_scope.py slices_cranium S  # only the classifier
    OTHERS_LR=0.1 python benchmarks/tried/layer_scope.py slices_cranium S  # classifier at lr, the rest at 0.1 x lr

Frozen blocks keep their batch-norm statistics (their ``train`` is pinned to eval mode).
"""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import probe_default as P  # noqa: E402
from monai_unlearn.core import unlearner as U  # noqa: E402

LAST_BLOCKS = int(os.environ.get("LAST_BLOCKS", "0"))
OTHERS_LR = float(os.environ.get("OTHERS_LR", "1.0"))
compute = U.PSGUnlearner.compute_losses


def first_step(self, *args, **kwargs):
    if not getattr(self, "_scoped", False):
        blocks = [m for m in self.model.children() if next(m.parameters(), None) is not None]
        if LAST_BLOCKS:
            for m in blocks[:-LAST_BLOCKS]:
                m.requires_grad_(False)
                m.train = (lambda mode=True, m=m: torch.nn.Module.train(m, False))
        if OTHERS_LR != 1.0:
            head = {id(p) for p in blocks[-1].parameters()}
            group = self.optimizer.param_groups[0]
            options = {k: v for k, v in group.items() if k != "params"}
            params = group["params"]
            self.optimizer.param_groups = []
            self.optimizer.add_param_group({**options, "params": [p for p in params if id(p) in head]})
            self.optimizer.add_param_group({**options, "params": [p for p in params if id(p) not in head],
                                            "lr": options["lr"] * OTHERS_LR})
        self._scoped = True
    return compute(self, *args, **kwargs)


if __name__ == "__main__":
    U.PSGUnlearner.compute_losses = first_step
    P.main()
