"""Is a withdrawn class still readable from a network's features after unlearning?

The default forgets a withdrawn class of a classifier by revising its classification head alone
(``PSGConfig.withdrawn_scope="head"``), so the layers before the head stay the original's. This script measures
what that leaves: on the scenario benchmark's FashionMNIST class-0 request (cached models; the retrained model is
scored like the others and feeds nothing), a logistic regression is trained on the classifier's input features of
the validation split (1,000 images of every class) to tell class 0 from the rest, five-fold cross-validated, for the
original, the retrained model, the default (head) and the whole-network run (``withdrawn_scope="network"``).
A retrained model was never trained on class 0, so its features show how readable the class is anyway.

    python benchmarks/feature_probe.py              # seeds 0-2, about 30 s on 2 CPU cores
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import scenarios as S  # noqa: E402
from probe_default import loader  # noqa: E402

from monai_unlearn import PSGConfig, unlearn  # noqa: E402

SCENARIO, WITHDRAWN = "fmnist_class0", 0


def features(network: torch.nn.Module, batches) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's inputs (standardised) and whether each item is of the withdrawn class."""
    seen: list[torch.Tensor] = []
    hook = network.classifier.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    labels = []
    network.eval()
    try:
        with torch.no_grad():
            for image, label in batches:
                network(image)
                labels.append(label)
    finally:
        hook.remove()
    x = torch.cat(seen).numpy()
    return (x - x.mean(0)) / (x.std(0) + 1e-6), (torch.cat(labels) == WITHDRAWN).numpy().astype(int)


def readability(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Five-fold ROC AUC and balanced accuracy of a linear probe for the withdrawn class."""
    auc = cross_val_score(LogisticRegression(max_iter=2000), x, y, cv=5, scoring="roc_auc").mean()
    balanced = cross_val_score(LogisticRegression(max_iter=2000, class_weight="balanced"), x, y, cv=5,
                               scoring="balanced_accuracy").mean()
    return float(auc), float(balanced)


def main(argv: list[str] | None = None) -> dict[str, list[tuple[float, float]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bench = S.parse(["--scenarios", SCENARIO, "--threads", str(args.threads)])
    scores: dict[str, list[tuple[float, float]]] = {}
    for seed in range(args.seeds):
        data = S.build_scenario(bench, SCENARIO, seed)
        models = S.train_models(bench, SCENARIO, seed, data)

        def unlearned(scope: str) -> torch.nn.Module:
            torch.manual_seed(seed)
            network, _ = unlearn(models["original"], loader(data["forget"], data["batch_size"], True, seed),
                                 loader(data["remain"], data["batch_size"], True, seed),
                                 val_loader=loader(data["val"], 256, False), evaluate=False, progress=False,
                                 config=PSGConfig.package_default(withdrawn_scope=scope))
            return network

        networks = {"original": models["original"], "retrained": models["retrained"],
                    "default (head)": unlearned("head"), "whole network": unlearned("network")}
        for name, network in networks.items():
            scores.setdefault(name, []).append(readability(*features(network, loader(data["val"], 256, False))))
            print(f"seed {seed} {name}: AUC {scores[name][-1][0]:.3f}, balanced accuracy {scores[name][-1][1]:.3f}",
                  flush=True)
    print("\n| model | AUC, class 0 vs rest | balanced accuracy |\n|---|---|---|")
    for name, values in scores.items():
        cells = [f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"
                 for v in zip(*values)]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    return scores


if __name__ == "__main__":
    main()
