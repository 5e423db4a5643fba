"""Benchmark 2, cost: images/second of one PSG iteration vs one plain training step, and how time scales.

    python benchmarks/cost.py                 # narrow AllCNN (width 0.25), batch 64, 2 threads
    python benchmarks/cost.py --width 1.0     # the published AllCNN width
    python benchmarks/cost.py --quick         # CI smoke run

Part 1 measures, in the same run and interleaved round by round (so background load hits both alike), the
median wall time of (a) one plain training step (forward, cross-entropy, backward, SGD step) and (b) one PSG
iteration (``PSGUnlearner.step``: T inner sign-gradient steps on the frozen reference, then one update) on the
same model and the same batch of 64, for T = 1, 2, 3 inner steps (``phi = 0``, forget batch only) and for T = 1 with
the remain term (``phi = 1``, one remain batch of 64 more). The figure is the cost ratio PSG / plain step.
Part 2 times PSG passes over forget sets of growing size and retraining passes over remain sets of growing size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, machine, markdown_table  # noqa: E402
from allcnn import allcnn  # noqa: E402

from monai_unlearn import PSGConfig  # noqa: E402
from monai_unlearn.baselines import run_method  # noqa: E402
from monai_unlearn.core import PSGUnlearner, frozen_reference  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10, help="timed iterations of each variant (after 2 warm-ups)")
    p.add_argument("--steps", default="1,2,3", help="inner steps T to time")
    p.add_argument("--forget-sizes", default="256,512,1024")
    p.add_argument("--remain-sizes", default="1024,2048,4096")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.rounds, args.steps = 0.0625, 1, "1,2"
        args.forget_sizes, args.remain_sizes = "64", "64,128"
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    torch.manual_seed(0)
    bs = args.batch_size
    x, y = torch.rand(bs, 1, 28, 28), torch.randint(0, 10, (bs,))
    xr, yr = torch.rand(bs, 1, 28, 28), torch.randint(0, 10, (bs,))
    base = allcnn(args.width)
    steps = [int(s) for s in args.steps.split(",")]

    plain_model = frozen_reference(base).requires_grad_(True)
    plain_opt = torch.optim.SGD(plain_model.parameters(), 1e-4, momentum=0.9)

    def plain():
        plain_model.train()
        plain_opt.zero_grad(set_to_none=True)
        F.cross_entropy(plain_model(x), y).backward()
        plain_opt.step()

    variants = {"plain step": plain}
    for t in steps:
        for phi in ((0.0, 1.0) if t == 1 else (0.0,)):
            model = frozen_reference(base).requires_grad_(True)
            cfg = PSGConfig(eps=0.1, value_range=(0.0, 1.0), num_steps=t, gamma=0.5 if t > 1 else 0.0,
                            lam=0.1 if t > 1 else 0.0, phi=phi, seed=0)
            un = PSGUnlearner(model, torch.optim.SGD(model.parameters(), 1e-4, momentum=0.9), cfg)
            name = f"PSG T={t}" + (" + remain (phi=1)" if phi else "")
            variants[name] = (lambda u=un, p=phi: u.step(x, y, xr if p else None, yr if p else None))
    times = {k: [] for k in variants}
    for r in range(args.rounds + 2):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            if r >= 2:
                times[name].append(time.perf_counter() - start)
    plain_s = statistics.median(times["plain step"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"variant": name, "median_s": med, "images_per_s": bs / med, "ratio": med / plain_s,
                     "min_s": min(ts), "max_s": max(ts)})
    table1 = markdown_table(rows, [("variant", "variant", ""), ("median_s", "median s / iteration", ".4f"),
                                   ("images_per_s", "forget images / s", ".1f"), ("ratio", "cost vs plain step", ".2f"),
                                   ("min_s", "min s", ".4f"), ("max_s", "max s", ".4f")])
    print(table1, flush=True)

    # Part 2: scaling
    scale_rows = []
    for n in [int(s) for s in args.forget_sizes.split(",")]:
        fl = DataLoader(TensorDataset(torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,))), bs)
        _, res = run_method("psg", base, fl, None, epochs=1, lr=1e-4, eps=0.1, value_range=(0.0, 1.0), num_steps=1,
                            phi=0.0, evaluate=False)
        scale_rows.append({"what": "PSG (T=1), 1 pass over forget set", "n": n, "time_s": res.time_s,
                           "per_image_ms": 1000 * res.time_s / n})
        print(scale_rows[-1], flush=True)
    for n in [int(s) for s in args.remain_sizes.split(",")]:
        rl = DataLoader(TensorDataset(torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,))), bs)
        _, res = run_method("retrain", base, None, rl, epochs=1, lr=1e-3, optimizer="adam", evaluate=False)
        scale_rows.append({"what": "Retrain, 1 epoch over remain set", "n": n, "time_s": res.time_s,
                           "per_image_ms": 1000 * res.time_s / n})
        print(scale_rows[-1], flush=True)
    table2 = markdown_table(scale_rows, [("what", "run", ""), ("n", "set size", "d"), ("time_s", "time (s)", ".2f"),
                                         ("per_image_ms", "ms / image", ".2f")])
    print(table2)
    tag = args.tag or ("cost_quick" if args.quick else f"cost_w{args.width}")
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"command": " ".join(sys.argv), "machine": info, "width": args.width, "batch_size": bs,
              "rounds": args.rounds, "iteration_rows": rows, "scaling_rows": scale_rows, "tables": [table1, table2]}
    (args.out / f"{tag}.json").write_text(json.dumps(record, indent=1))
    (args.out / f"{tag}.md").write_text(table1 + "\n\n" + table2 + "\n")
    return record


if __name__ == "__main__":
    main()
