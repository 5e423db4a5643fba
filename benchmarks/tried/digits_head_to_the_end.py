"""Tried on 2026-12-08, not kept: the head alone revised to the end of the run (the give-up rule disabled) on
scikit-learn's digits, digit 3 withdrawn, five seeds, the package default otherwise. From the repository root:

    python benchmarks/tried/digits_head_to_the_end.py            # the rule disabled
    python benchmarks/tried/digits_head_to_the_end.py --rule     # the package as it is, for comparison

Prints per seed the passes, the gap to the retrained model (which only scores), remain accuracy against the
original's and the retrained model's, and the held-out guard of the original and at every check.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import regime_digits as R  # noqa: E402
from monai_unlearn import PSGConfig, unlearn  # noqa: E402
from monai_unlearn.core import unlearner as U  # noqa: E402

if __name__ == "__main__":
    if "--rule" not in sys.argv:
        U.PSGUnlearner.revise_whole_network = lambda self: False
    torch.set_num_threads(2)
    images, labels = R.load()
    for seed in range(5):
        (train_idx, val_idx, test_idx), original, loader = R.seed_setup(images, labels, seed, 30)
        forget = train_idx[labels[train_idx] == R.FORGET_CLASS]
        remain = train_idx[labels[train_idx] != R.FORGET_CLASS]
        retrained = R.train(images[remain], labels[remain], seed, 30)
        torch.manual_seed(seed)
        _, result = unlearn(original, loader(forget, True), loader(remain, True), config=PSGConfig.package_default(),
                            val_loader=loader(val_idx), test_loader=loader(test_idx), retrained_model=retrained,
                            num_classes=10, progress=False)
        print(seed, "passes", result.epochs, "gap %.3f" % result.retrain_gap["average_gap"],
              "remain %.3f (original %.3f, retrained %.3f)" % (result.after["remain"]["accuracy"],
                                                               result.before["remain"]["accuracy"],
                                                               result.retrained["remain"]["accuracy"]),
              "guard: original %.2f, checks" % result.stopping["original_guard"],
              [round(c["guard"], 2) for c in result.stopping["checks"]])
