"""Composition benchmark: a composed model against its two parents on the demo's scanner-retirement task.

    python benchmarks/composition.py            # uses (or trains) the demo's bundle under runs/demo

Two unlearning runs of the example bundle forget the retired head-CT scanner with different settings: one tuned
for retention (small eps, strong remain term), one for forgetting (large eps, weak remain term). The composed
model takes the feature extractor of the first and the classification head of the second; a variant then refits
the head alone on the remain set for one pass. All four are evaluated on the same forget / remain / test data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, machine, markdown_table  # noqa: E402

from monai.bundle import ConfigParser  # noqa: E402
from monai.data import DataLoader, Dataset  # noqa: E402

from monai_unlearn.apps.demo import DEFAULT_DEVICE, UNLEARN_OVERLAY, run_demo  # noqa: E402
from monai_unlearn.bundle import unlearn_from_parser  # noqa: E402
from monai_unlearn.bundle.compose import bundle_network  # noqa: E402
from monai_unlearn.core import compose_models, finetune_on_remain, select_forget  # noqa: E402
from monai_unlearn.metrics import evaluate_unlearning, summary_rows  # noqa: E402

RUNS = {
    "retention run (eps 0.1, phi 4)": {"unlearn_params#eps": 0.1, "unlearn_params#phi": 4.0, "unlearn_lr": 0.001},
    "forgetting run (eps 0.3, phi 1)": {"unlearn_params#eps": 0.3, "unlearn_params#phi": 1.0, "unlearn_lr": 0.003},
}


def parser_for(original: str, dataset_dir: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([f"{original}/configs/train.json", UNLEARN_OVERLAY])
    parser["bundle_root"] = original
    parser["dataset_dir"] = dataset_dir
    return parser


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=str(Path(__file__).resolve().parents[1] / "runs" / "demo"))
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    workdir = os.path.abspath(args.workdir)
    original, dataset_dir = os.path.join(workdir, "original"), os.path.join(workdir, "data")
    if not os.path.isfile(os.path.join(original, "models", "model.pt")):
        run_demo(workdir)  # trains the original (and the retrained) bundle
    outputs = {}
    for name, overrides in RUNS.items():
        out = os.path.join(workdir, "composition", name.split()[0])
        parser = parser_for(original, dataset_dir)
        for key, value in {"forget": f"device={DEFAULT_DEVICE}", "output_dir": out, "unlearn_overwrite": True,
                           "unlearn_progress": False, **overrides}.items():
            parser[key] = value
        unlearn_from_parser(parser)
        outputs[name] = out

    parser = parser_for(original, dataset_dir)
    datalist = parser.get_parsed_content("train#dataset#data")
    forget, remain = select_forget(list(datalist), key="device", value=DEFAULT_DEVICE)
    transform = parser.get_parsed_content("validate#preprocessing")
    load = lambda items, shuffle=False: DataLoader(Dataset(items, transform), batch_size=16, shuffle=shuffle)  # noqa: E731
    loaders = (load(forget), load(remain), load(list(parser.get_parsed_content("validate#dataset#data"))))

    models = {"original": bundle_network(original)}
    models.update({name: bundle_network(path) for name, path in outputs.items()})
    retention, forgetting = (models[n] for n in RUNS)
    models["composed (features: retention, head: forgetting)"] = compose_models(retention, forgetting)
    start = time.perf_counter()
    refit = finetune_on_remain(compose_models(retention, forgetting), load(remain, True), epochs=1, lr=0.001)
    refit_s = time.perf_counter() - start
    models["composed + head refit on remain (1 pass)"] = refit
    rows = {}
    for name, model in models.items():
        rows[name] = summary_rows(evaluate_unlearning(model.eval(), *loaders, num_classes=4))
    columns = [("model", "model", "")] + [(k, k, ".3f") for k in ("forget_acc", "remain_acc", "test_acc", "mia")]
    table = markdown_table([{"model": n, **r} for n, r in rows.items()], columns)
    print(table)
    record = {"machine": machine(), "rows": rows, "head_refit_s": refit_s, "device_forgotten": DEFAULT_DEVICE}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "composition.json").write_text(json.dumps(record, indent=2))
    (args.out / "composition.md").write_text(table + "\n")
    return record


if __name__ == "__main__":
    main()
