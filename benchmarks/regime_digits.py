"""Fixed passes against the regime-calibrated stop (``unlearn(..., regime="auto")``) on scikit-learn's digits.

Two requests, each over several seeds (a new split, forget set, original and retrained model per seed): a whole
class withdrawn (digit 3), and a random fifth of digit 3 (its class stays). The retrained model only scores the
methods (Avg. Gap over forget / remain / test accuracy and MIA); the calibrated stop sees held-out validation data,
never the retrained model.

    python benchmarks/regime_digits.py                # 3 seeds, about 2 minutes on 2 CPU cores
    python benchmarks/regime_digits.py --quick        # 1 seed, fewer passes (seconds)
    python benchmarks/regime_digits.py --seeds 5 --withdrawn-weights 0,3   # the package default, class 3 withdrawn,
                                                                           # per PSGConfig.withdrawn_weight
    python benchmarks/regime_digits.py --seeds 5 --withdrawn-configs \
        '{"network": {"withdrawn_scope": "network", "head_phi": null}, "head": {}}'   # any PSGConfig changes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from monai_unlearn import PSGConfig, unlearn  # noqa: E402

FORGET_CLASS = 3


def small_cnn() -> torch.nn.Module:
    """Two convolutions and a linear head, for the 8x8 digits."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(32, 10),
    )


def train(images: torch.Tensor, labels: torch.Tensor, seed: int, epochs: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = small_cnn()
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    loader = DataLoader(TensorDataset(images, labels), 64, shuffle=True)
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model


def load() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits as ``(N, 1, 8, 8)`` images in [0, 1] and their labels."""
    digits = load_digits()
    return torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0, torch.tensor(digits.target)


def seed_setup(images: torch.Tensor, labels: torch.Tensor, seed: int, train_epochs: int):
    """A seed's train / validation / test indices (1200 / 300 / the rest), its original model, and a loader maker
    (``loader(indices, shuffle=False)``, batches of 32 in a seeded order)."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    train_idx, val_idx, test_idx = order[:1200], order[1200:1500], order[1500:]
    original = train(images[train_idx], labels[train_idx], seed, train_epochs)

    def loader(idx: torch.Tensor, shuffle: bool = False) -> DataLoader:
        return DataLoader(TensorDataset(images[idx], labels[idx]), 32, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(seed))

    return (train_idx, val_idx, test_idx), original, loader


def run(seeds: int, passes: int, train_epochs: int) -> list[dict]:
    images, labels = load()
    rows = []
    for seed in range(seeds):
        (train_idx, val_idx, test_idx), original, loader = seed_setup(images, labels, seed, train_epochs)
        of_class = train_idx[labels[train_idx] == FORGET_CLASS]
        subset = of_class[torch.randperm(len(of_class), generator=torch.Generator().manual_seed(seed))[: len(of_class) // 5]]

        for request, forget in (("class 3 withdrawn", of_class), ("random 20 % of class 3", subset)):
            remain = train_idx[~torch.isin(train_idx, forget)]
            start = time.perf_counter()
            retrained = train(images[remain], labels[remain], seed, train_epochs)
            retrain_s = time.perf_counter() - start
            for method, regime in (("fixed passes", "fixed"), ("regime auto", "auto")):
                torch.manual_seed(seed)
                _, result = unlearn(
                    original, loader(forget, True), loader(remain, True),
                    config=PSGConfig(eps=0.3, value_range=(0.0, 1.0), phi=4.0, seed=seed), epochs=passes,
                    lr=0.001, test_loader=loader(test_idx), retrained_model=retrained, num_classes=10,
                    progress=False, regime=regime, val_loader=loader(val_idx) if regime == "auto" else None)
                rows.append({"seed": seed, "request": request, "method": method, "passes": result.epochs,
                             "time_s": result.time_s, "retrain_s": retrain_s, **result.retrain_gap,
                             "after": {k: result.after[k]["accuracy"] for k in ("forget", "remain", "test")},
                             "retrained": {k: result.retrained[k]["accuracy"] for k in ("forget", "remain", "test")},
                             "stopped": (result.stopping or {}).get("stopped"),
                             "rewound": (result.stopping or {}).get("rewound"),
                             "target": ((result.stopping or {}).get("calibration") or {}).get("target")})
    return rows


def run_withdrawn_configs(seeds: int, configs: dict[str, dict], train_epochs: int) -> list[dict]:
    """Class 3 withdrawn with the package default (``unlearn(original, forget, remain, val_loader=val)``), once per
    entry of ``configs`` (a name and the ``PSGConfig`` fields it changes), on each seed's original and retrained
    models."""
    images, labels = load()
    rows = []
    for seed in range(seeds):
        (train_idx, val_idx, test_idx), original, loader = seed_setup(images, labels, seed, train_epochs)
        forget = train_idx[labels[train_idx] == FORGET_CLASS]
        remain = train_idx[labels[train_idx] != FORGET_CLASS]
        start = time.perf_counter()
        retrained = train(images[remain], labels[remain], seed, train_epochs)
        retrain_s = time.perf_counter() - start

        for name, fields in configs.items():
            torch.manual_seed(seed)
            _, result = unlearn(original, loader(forget, True), loader(remain, True),
                                config=PSGConfig.package_default(**fields), val_loader=loader(val_idx),
                                test_loader=loader(test_idx), retrained_model=retrained, num_classes=10, progress=False)
            rows.append({"seed": seed, "request": "class 3 withdrawn, package default",
                         "method": name, "passes": result.epochs, "time_s": result.time_s,
                         "retrain_s": retrain_s, **result.retrain_gap,
                         "before": {k: result.before[k]["accuracy"] for k in ("forget", "remain", "test")},
                         "after": {k: result.after[k]["accuracy"] for k in ("forget", "remain", "test")},
                         "retrained": {k: result.retrained[k]["accuracy"] for k in ("forget", "remain", "test")}})
    return rows


def table(rows: list[dict]) -> str:
    def mean_sd(values: list[float]) -> str:
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    lines = ["| request | method | Avg. Gap | forget acc (retrained) | remain acc (retrained) | test acc | passes | time / retrain |",
             "|---|---|---|---|---|---|---|---|"]
    for request in dict.fromkeys(r["request"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            got = [r for r in rows if r["request"] == request and r["method"] == method]
            lines.append(
                f"| {request} | {method} | {mean_sd([r['average_gap'] for r in got])} | "
                f"{mean_sd([r['after']['forget'] for r in got])} ({mean_sd([r['retrained']['forget'] for r in got])}) | "
                f"{mean_sd([r['after']['remain'] for r in got])} ({mean_sd([r['retrained']['remain'] for r in got])}) | "
                f"{mean_sd([r['after']['test'] for r in got])} | {mean_sd([float(r['passes']) for r in got])} | "
                f"{mean_sd([r['time_s'] / r['retrain_s'] for r in got])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=15, help="fixed passes, and the regime's budget")
    parser.add_argument("--train-epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--withdrawn-weights", default=None,
                        help="comma-separated PSGConfig.withdrawn_weight values: run the package default on class 3 "
                             "withdrawn once per value instead of the fixed-passes comparison")
    parser.add_argument("--withdrawn-configs", default=None,
                        help='JSON {name: {PSGConfig field: value}}: run the package default with each change on class '
                             '3 withdrawn instead of the fixed-passes comparison, e.g. \'{"network": {"withdrawn_scope": '
                             '"network"}, "head": {}}\'')
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.seeds, args.passes, args.train_epochs = 1, 2, 3
    if args.withdrawn_configs:
        configs = json.loads(args.withdrawn_configs)
        rows, name = run_withdrawn_configs(args.seeds, configs, args.train_epochs), "regime_digits_configs.json"
    elif args.withdrawn_weights:
        configs = {f"withdrawn_weight {float(w):g}": {"withdrawn_weight": float(w)}
                   for w in args.withdrawn_weights.split(",")}
        rows, name = run_withdrawn_configs(args.seeds, configs, args.train_epochs), "regime_digits_withdrawn.json"
    else:
        rows, name = run(args.seeds, args.passes, args.train_epochs), "regime_digits.json"
    print(table(rows))
    if not args.quick:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, name), "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
