"""Benchmark 3, trade-off sweep: PSG over a gamma x lambda x phi grid; heat maps and a forget/remain Pareto plot.

    python benchmarks/tradeoff.py             # reuses the cached models of fashion_mnist_protocol.py's settings
    python benchmarks/tradeoff.py --quick     # CI smoke run

For every (gamma, lambda, phi) the same original model is unlearned with PSG and evaluated on forget and remain
data; Boundary Shrink and the retrained model are marked on the Pareto plot (x: forget accuracy, lower is better;
y: remain accuracy, higher is better). Writes ``<tag>.json``, ``<tag>_heatmap.png`` (remain accuracy and forget
accuracy over gamma x lambda, one panel per phi) and ``<tag>_pareto.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_CACHE, RESULTS, cached_model, fashion_splits, loader, machine, run_method, sample  # noqa: E402
from allcnn import allcnn  # noqa: E402

from monai_unlearn.metrics import collect_outputs  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--train-limit", type=int, default=3000)
    p.add_argument("--test-limit", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3, help="training epochs of the cached original / retrained models")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--gammas", default="0,0.5,1,2")
    p.add_argument("--lambdas", default="0,0.1,0.5")
    p.add_argument("--phis", default="0,1")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--num-steps", type=int, default=2)
    p.add_argument("--unlearn-epochs", type=int, default=3)
    p.add_argument("--unlearn-lr", type=float, default=1e-3)
    p.add_argument("--remain-eval", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.train_limit, args.test_limit, args.epochs = 0.0625, 300, 100, 1
        args.gammas, args.lambdas, args.phis, args.unlearn_epochs, args.remain_eval = "0,1", "0", "1", 1, 100
        args.cache = args.cache / "quick"
    return args


def accuracy(model, data_loader) -> float:
    logits, labels = collect_outputs(model, data_loader)
    return float((logits.argmax(1) == labels).float().mean())


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    splits = fashion_splits(args.train_limit, args.test_limit, 0, None, args.seed)
    forget = loader(splits["forget"], 64, True, args.seed)
    remain = loader(splits["remain"], 64, True, args.seed)
    remain_eval = loader(sample(splits["remain"], args.remain_eval, args.seed), 256, False)
    build = lambda: allcnn(args.width)  # noqa: E731
    base = {"width": args.width, "train_limit": args.train_limit, "epochs": args.epochs, "lr": args.lr,
            "seed": args.seed, "batch_size": 64}

    def trainer(data):
        def fit(model):
            model, result = run_method("retrain", model, None, loader(data, 64, True, args.seed), epochs=args.epochs,
                                       lr=args.lr, optimizer="adam", seed=args.seed, evaluate=False)
            return model, {"time_s": result.time_s, "iterations": result.iterations, "history": result.history}
        return fit

    original, _, _ = cached_model(args.cache / f"original_w{args.width}_{args.train_limit}_{args.epochs}.pt", build,
                                  trainer(splits["train"]), base)
    retrained, _, _ = cached_model(args.cache / f"retrained_w{args.width}_{args.train_limit}_{args.epochs}_c0.pt", build,
                                   trainer(splits["remain"]), {**base, "forget": "c0"})
    common = {"eps": args.eps, "value_range": (0.0, 1.0)}
    points = []
    for gamma, lam, phi in itertools.product(*(
            [float(v) for v in s.split(",")] for s in (args.gammas, args.lambdas, args.phis))):
        torch.manual_seed(args.seed)
        forget = loader(splits["forget"], 64, True, args.seed)  # the same shuffling for every point of the grid
        remain = loader(splits["remain"], 64, True, args.seed)
        model, result = run_method("psg", original, forget, remain if phi > 0 else None, epochs=args.unlearn_epochs,
                                   lr=args.unlearn_lr, num_steps=args.num_steps, gamma=gamma, lam=lam, phi=phi,
                                   seed=args.seed, evaluate=False, **common)
        points.append({"gamma": gamma, "lambda": lam, "phi": phi, "forget_acc": accuracy(model, forget),
                       "remain_acc": accuracy(model, remain_eval), "time_s": result.time_s})
        print(points[-1], flush=True)
    forget = loader(splits["forget"], 64, True, args.seed)
    model, result = run_method("boundary_shrink", original, forget, None, epochs=args.unlearn_epochs,
                               lr=args.unlearn_lr, evaluate=False, **common)
    bs = {"forget_acc": accuracy(model, forget), "remain_acc": accuracy(model, remain_eval), "time_s": result.time_s}
    rt = {"forget_acc": accuracy(retrained, forget), "remain_acc": accuracy(retrained, remain_eval)}
    og = {"forget_acc": accuracy(original, forget), "remain_acc": accuracy(original, remain_eval)}
    tag = args.tag or ("tradeoff_quick" if args.quick else f"tradeoff_w{args.width}_{args.train_limit}")
    args.out.mkdir(parents=True, exist_ok=True)
    plots = plot(points, bs, rt, og, args.out, tag)
    record = {"command": " ".join(sys.argv), "machine": info, "settings": vars(args) | {"cache": str(args.cache),
              "out": str(args.out)}, "points": points, "boundary_shrink": bs, "retrained": rt, "original": og,
              "plots": plots}
    (args.out / f"{tag}.json").write_text(json.dumps(record, indent=1))
    return record


def pareto(points: list[dict]) -> list[dict]:
    """Points not dominated in (lower forget accuracy, higher remain accuracy)."""
    return [p for p in points if not any(
        q["forget_acc"] <= p["forget_acc"] and q["remain_acc"] >= p["remain_acc"] and
        (q["forget_acc"], q["remain_acc"]) != (p["forget_acc"], p["remain_acc"]) for q in points)]


def plot(points, bs, rt, og, out: Path, tag: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gammas = sorted({p["gamma"] for p in points})
    lams = sorted({p["lambda"] for p in points})
    phis = sorted({p["phi"] for p in points})
    fig, axes = plt.subplots(2, len(phis), figsize=(4 * len(phis), 7), squeeze=False)
    for j, phi in enumerate(phis):
        for i, key in enumerate(("remain_acc", "forget_acc")):
            grid = np.full((len(lams), len(gammas)), np.nan)
            for p in points:
                if p["phi"] == phi:
                    grid[lams.index(p["lambda"]), gammas.index(p["gamma"])] = p[key]
            ax = axes[i][j]
            values = [p[key] for p in points]  # one colour scale per row, spread over the values measured
            low, high = min(values), max(values)
            low, high = (low - 0.01, high + 0.01) if high - low < 0.02 else (low, high)
            im = ax.imshow(grid, origin="lower", cmap="viridis" if key == "remain_acc" else "magma_r", vmin=low, vmax=high)
            for (a, b), v in np.ndenumerate(grid):
                ax.text(b, a, f"{v:.3f}", ha="center", va="center", color="w", fontsize=8)
            ax.set_xticks(range(len(gammas)), [str(g) for g in gammas])
            ax.set_yticks(range(len(lams)), [str(v) for v in lams])
            ax.set_xlabel("gamma (noise)")
            ax.set_ylabel("lambda (proximity)")
            ax.set_title(f"{key.replace('_', ' ')}, phi={phi}")
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    heat = out / f"{tag}_heatmap.png"
    fig.savefig(heat, dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter([p["forget_acc"] for p in points], [p["remain_acc"] for p in points], c=[p["phi"] for p in points],
               cmap="coolwarm", label="PSG grid (colour: phi)")
    front = sorted(pareto(points), key=lambda p: p["forget_acc"])
    ax.plot([p["forget_acc"] for p in front], [p["remain_acc"] for p in front], "k--", lw=1, label="PSG Pareto front")
    ax.scatter([bs["forget_acc"]], [bs["remain_acc"]], marker="s", s=80, c="orange", label="Boundary Shrink")
    ax.scatter([rt["forget_acc"]], [rt["remain_acc"]], marker="*", s=160, c="green", label="Retrain")
    ax.scatter([og["forget_acc"]], [og["remain_acc"]], marker="x", s=80, c="gray", label="Original")
    ax.set_xlabel("forget accuracy (lower is better)")
    ax.set_ylabel("remain accuracy (higher is better)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    par = out / f"{tag}_pareto.png"
    fig.savefig(par, dpi=100)
    plt.close(fig)
    return [str(heat), str(par)]


if __name__ == "__main__":
    main()
