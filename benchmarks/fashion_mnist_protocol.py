"""Benchmark 1, the paper protocol: FashionMNIST, AllCNN, forget class 0 (or 10 % of it), every method.

    python benchmarks/fashion_mnist_protocol.py                     # narrow AllCNN (width 0.25), class 0
    python benchmarks/fashion_mnist_protocol.py --selective 0.1     # forget a random 10 % of class 0
    python benchmarks/fashion_mnist_protocol.py --quick             # CI smoke run (seconds)

Trains the original model on the training split and a model retrained without the forget set (both cached under
``--cache``; reruns reuse them), runs every method of ``monai_unlearn.baselines.METHODS`` from the same original
model on the same loaders, and writes a Markdown table and JSON under ``--out``. Columns: forget / remain / test
accuracy (test: the test images of the kept classes), forget-class test accuracy, loss-based MIA (forget vs test)
mean and std, MIA-efficacy (entropy attack trained on remain vs test, share of forget samples called
non-member), distance to retrain (mean absolute gap of forget, remain, test accuracy and MIA), wall time of the
method alone, and that time as a fraction of retraining.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    COST_COLUMNS,
    DEFAULT_CACHE,
    MIA_COLUMNS,
    RESULTS,
    cached_model,
    evaluate_row,
    fashion_splits,
    gap_to,
    loader,
    machine,
    markdown_table,
    method_row,
    retrain_row,
    run_method,
    sample,
)
from allcnn import allcnn  # noqa: E402

# row name -> (method, epochs, lr, kwargs); epochs count passes over the remain set, except for the PSG family
# (passes over the forget set). "psg" is the setting tuned to the targets on the 20k-image run (see
# RESULTS.md: phi 4 keeps the remain set, one inner step and one pass keep the cost low); "psg_noisy" is the
# earlier noisy two-step setting, kept to show what the noise and the smaller phi cost.
METHOD_SETTINGS = {
    "finetune": ("finetune", 1, 0.01, {}),
    "neggrad_plus": ("neggrad_plus", 1, 0.01, {"beta": 0.95}),
    "cf_k": ("cf_k", 1, 0.01, {"k": 2}),
    "eu_k": ("eu_k", 2, 0.01, {"k": 2}),
    "scrub": ("scrub", 2, 0.005, {"msteps": 1}),
    "boundary_shrink": ("boundary_shrink", 5, 1e-3, {"eps": 0.1, "value_range": (0.0, 1.0)}),
    "psg_noisy": ("psg", 5, 1e-3, {"eps": 0.1, "value_range": (0.0, 1.0), "num_steps": 2, "gamma": 0.5, "lam": 0.1,
                                   "phi": 1.0, "seed": 0}),
    "psg": ("psg", 1, 3e-3, {"eps": 0.1, "value_range": (0.0, 1.0), "num_steps": 1, "phi": 4.0, "seed": 0}),
    # selective forgetting only: small steps, stopped after the first pass at which the forget items are recognised
    # no better than unseen images of their class (the original's accuracy on held-out test images of the class,
    # a number known without retraining)
    "psg_heldout_stop": ("psg", 20, 1e-4, {"eps": 0.1, "value_range": (0.0, 1.0), "num_steps": 1, "phi": 4.0,
                                           "seed": 0, "stop_at_forget_accuracy": "heldout"}),
}
ROW_NAMES = {"psg_noisy": "PSG (T=2, gamma 0.5, lambda 0.1, phi 1, 5 passes)", "psg": "PSG (T=1, phi 4, 1 pass)",
             "psg_heldout_stop": "PSG (T=1, phi 4, lr 1e-4, stop at held-out accuracy)"}
SELECTIVE_ONLY = {"psg_heldout_stop"}

COLUMNS = [
    ("method", "method", ""),
    ("forget_acc", "forget acc", ".3f"),
    ("remain_acc", "remain acc", ".3f"),
    ("test_acc", "test acc (kept classes)", ".3f"),
    ("test_forget_class_acc", "test acc (forget class)", ".3f"),
    *MIA_COLUMNS,
    *COST_COLUMNS,
]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI-sized smoke run")
    p.add_argument("--width", type=float, default=0.25, help="AllCNN width (1.0 = published; 0.25 = narrow CPU variant)")
    p.add_argument("--train-limit", type=int, default=None, help="class-balanced training subset (default: all 60k)")
    p.add_argument("--test-limit", type=int, default=None, help="class-balanced test subset (default: all 10k)")
    p.add_argument("--epochs", type=int, default=5, help="training epochs of the original and retrained models")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate of original and retrained models")
    p.add_argument("--forget-class", type=int, default=0)
    p.add_argument("--selective", type=float, default=None, help="forget this fraction of the class instead of all")
    p.add_argument("--methods", default=None, help="comma-separated rows (default: all that apply to the variant)")
    p.add_argument("--remain-eval", type=int, default=5000, help="remain samples used for evaluation and the attacks")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default=None, help="name of the output files (default from the settings)")
    p.add_argument("--fresh-retrain", action="store_true",
                   help="retrain even when a cached retrained model exists, so that the retraining time is measured "
                        "in the same conditions (machine load) as the methods")
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.train_limit, args.test_limit, args.epochs = 0.0625, 300, 100, 1
        args.remain_eval = 100
        args.cache = args.cache / "quick"
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    splits = fashion_splits(args.train_limit, args.test_limit, args.forget_class, args.selective, args.seed)
    bs = args.batch_size
    def step_loaders() -> dict:
        """Fresh seeded shuffling for each method, so no method's result depends on the ones run before it."""
        return {"forget": loader(splits["forget"], bs, True, args.seed),
                "remain": loader(splits["remain"], bs, True, args.seed)}

    loaders = {
        **step_loaders(),
        "remain_eval": loader(sample(splits["remain"], args.remain_eval, args.seed), 256, False),
        "test": loader(splits["test_other"] if args.selective is None else splits["test"], 256, False),
        "test_forget_class": loader(splits["test_forget_class"], 256, False),
    }
    # for class forgetting the held-out data of the MIA / test accuracy is the kept classes' test set
    build = lambda: allcnn(args.width)  # noqa: E731
    base = {"width": args.width, "train_limit": args.train_limit, "epochs": args.epochs, "lr": args.lr,
            "seed": args.seed, "batch_size": bs}

    def trainer(data):
        def fit(model):
            torch.manual_seed(args.seed)
            model, result = run_method(
                "retrain", model, None, loader(data, bs, True, args.seed), epochs=args.epochs, lr=args.lr,
                optimizer="adam", seed=args.seed, evaluate=False,
            )
            return model, {"time_s": result.time_s, "iterations": result.iterations, "history": result.history}
        return fit

    original, orig_info, orig_cached = cached_model(
        args.cache / f"original_w{args.width}_{args.train_limit}_{args.epochs}.pt", build, trainer(splits["train"]), base
    )
    forget_key = f"c{args.forget_class}" + ("" if args.selective is None else f"_sel{args.selective}")
    retrained, re_info, re_cached = cached_model(
        args.cache / f"retrained_w{args.width}_{args.train_limit}_{args.epochs}_{forget_key}.pt", build,
        trainer(splits["remain"]), {**base, "forget": forget_key}, refresh=args.fresh_retrain,
    )
    retrain_time = re_info["time_s"]
    rows = []
    row = evaluate_row(original, loaders)
    rows.append({"method": "Original", **row, "time_s": orig_info["time_s"], "time_frac": None})
    ref = evaluate_row(retrained, loaders)
    if args.methods is None:
        methods = ["retrain", *(m for m in METHOD_SETTINGS if args.selective is not None or m not in SELECTIVE_ONLY)]
    else:
        methods = [m for m in args.methods.split(",") if m]
    # the original's accuracy on unseen images of the forget class: where retraining would leave the forget items
    heldout_accuracy = rows[0]["test_forget_class_acc"]
    for name in methods:
        if name == "retrain":
            rows.append(retrain_row(ref, retrain_time, re_cached))
            print(rows[-1], flush=True)
            continue
        if name not in METHOD_SETTINGS:
            raise SystemExit(f"unknown method {name!r}; choose from retrain, {', '.join(METHOD_SETTINGS)}")
        method, epochs, lr, kwargs = METHOD_SETTINGS[name]
        if kwargs.get("stop_at_forget_accuracy") == "heldout":
            kwargs = {**kwargs, "stop_at_forget_accuracy": heldout_accuracy}
        if args.quick:
            epochs = 1
        torch.manual_seed(args.seed)
        steps = step_loaders()
        model, result = run_method(method, original, steps["forget"], steps["remain"], epochs=epochs, lr=lr,
                                   evaluate=False, **kwargs)
        row = evaluate_row(model, loaders)
        rows.append(method_row(ROW_NAMES.get(name, result.method), row, ref, result.time_s, retrain_time, epochs, lr,
                               kwargs))
        print({k: v for k, v in rows[-1].items() if k != "params"}, flush=True)
    rows[0]["gap"] = gap_to(rows[0], ref)

    tag = args.tag or ("quick" if args.quick else f"fmnist_w{args.width}_{forget_key}")
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, COLUMNS)
    record = {
        "command": " ".join(sys.argv), "machine": info, "settings": {**base, "forget": forget_key,
        "n_forget": len(splits["forget"]), "n_remain": len(splits["remain"]), "n_test": len(loaders["test"].dataset)},
        "original_cached": orig_cached, "retrained_cached": re_cached, "original_train_time_s": orig_info["time_s"],
        "retrain_time_s": retrain_time, "method_settings": {k: [v[0], v[1], v[2], {a: (list(b) if isinstance(b, tuple)
        else b) for a, b in v[3].items()}] for k, v in METHOD_SETTINGS.items()}, "rows": rows, "table": table,
    }
    (args.out / f"{tag}.json").write_text(json.dumps(record, indent=1))
    (args.out / f"{tag}.md").write_text(table + "\n")
    print(table)
    return record


if __name__ == "__main__":
    main()
