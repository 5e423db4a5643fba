"""Segmentation unlearning on the MNI152 tissue slices: forget a label class, forget a device's cases.

Compares PSG (per-voxel boundary unlearning) with Retrain (the gold standard) and Fine-tune (continue training on
what is kept) on the data of ``bundles/tissue_segmenter`` (64x64 axial MNI152 slices, background/CSF/GM/WM, slabs
of slices as cases, three virtual scanners) with the bundle's network (a small MONAI UNet).

- *class*: forget white matter (class 3) voxel by voxel. Retrain = trained from scratch with class-3 voxels
  ignored by the loss (the class is never taught); Fine-tune = the original trained further the same way.
- *device*: forget scanner_b's cases. Retrain = trained from scratch on the other cases; Fine-tune = the original
  trained further on them.

Dice (per case, background excluded, MONAI's ``ignore_empty`` convention) on forget, remain/kept and test cases,
loss-based membership inference and wall time. Writes ``benchmarks/results/segmentation[_quick].json`` and a PNG
with one test slice: image, truth, original, PSG, fine-tuned and retrained predictions.

    python benchmarks/segmentation.py --quick
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet

from monai_unlearn import PSGConfig, unlearn
from monai_unlearn.apps import TISSUE_CLASSES, build_tissue_slice_datalist, split_tissue_cases
from monai_unlearn.metrics.segmentation import evaluate_segmentation, segmentation_summary_rows
from monai_unlearn.runner import format_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def network() -> torch.nn.Module:
    """The tissue_segmenter bundle's network."""
    return UNet(spatial_dims=2, in_channels=1, out_channels=4, channels=(16, 32, 64), strides=(2, 2), num_res_units=1)


def load(items: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([torch.from_numpy(np.asarray(nib.load(it["image"]).dataobj, dtype=np.float32))[None] for it in items])
    y = torch.stack([torch.from_numpy(np.asarray(nib.load(it["label"]).dataobj).astype(np.int64))[None] for it in items])
    return x, y


def batches(x: torch.Tensor, y: torch.Tensor, size: int = 10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def train(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int,
          ignore_classes: tuple[int, ...] = (), cosine: bool = False) -> tuple[torch.nn.Module, float]:
    """Adam + cross-entropy on whole slices with random flips; voxels of ``ignore_classes`` are not supervised;
    ``cosine`` anneals the learning rate to 0 over the epochs."""
    torch.manual_seed(seed)
    target = y[:, 0].clone()
    for c in ignore_classes:
        target[target == c] = -100
    optimizer = torch.optim.Adam(net.parameters(), lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs) if cosine else None
    start = time.perf_counter()
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(10):
            xb, yb = x[idx], target[idx]
            if torch.rand(()) < 0.5:
                xb, yb = xb.flip(-2), yb.flip(-2)
            optimizer.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            optimizer.step()
        if schedule is not None:
            schedule.step()
    return net.eval(), time.perf_counter() - start


def figure(path: Path, image, truth, predictions: dict[str, torch.Tensor], title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    cmap = ListedColormap(["black", "tab:blue", "tab:gray", "white"])
    panels = {"image": image, "truth": truth, **predictions}
    fig = Figure(figsize=(2.2 * len(panels), 2.6))
    for i, (name, value) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        if name == "image":
            ax.imshow(value.T, cmap="gray", origin="lower")
        else:
            ax.imshow(value.T, cmap=cmap, vmin=0, vmax=3, origin="lower", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer training epochs (a few minutes on 2 CPU cores)")
    parser.add_argument("--data", default=str(ROOT / "runs" / "tissue_slices"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--forget_class", type=int, default=3)
    parser.add_argument("--forget_device", default="scanner_b")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    epochs = 30 if args.quick else 80
    psg_epochs = 10 if args.quick else 20
    ft_epochs = 5 if args.quick else 10
    items = build_tissue_slice_datalist(args.data)
    train_items, test_items = split_tissue_cases(items)
    x, y = load(train_items)
    xt, yt = load(test_items)
    test = batches(xt, yt)
    devices = np.array([it["device"] for it in train_items])
    record = {"machine": {"date": subprocess.run(["date"], capture_output=True, text=True).stdout.strip(),
                          "python": platform.python_version(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "cpus": __import__("os").cpu_count()},
              "command": "python benchmarks/segmentation.py" + (" --quick" if args.quick else ""),
              "train_epochs": epochs, "psg_epochs": psg_epochs, "finetune_epochs": ft_epochs,
              "train_slices": len(train_items), "test_slices": len(test_items), "scenarios": {}}
    torch.manual_seed(args.seed)
    original, t_orig = train(network(), x, y, epochs, 5e-3, args.seed)
    record["train_time_s"] = t_orig
    out_dir = RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""

    scenarios = {
        "class": dict(forget=np.ones(len(x), bool), classes=(args.forget_class,)),
        "device": dict(forget=devices == args.forget_device, classes=()),
    }
    for name, spec in scenarios.items():
        mask = torch.from_numpy(spec["forget"])
        classes = list(spec["classes"]) or None
        xf, yf = x[mask], y[mask]
        xr, yr = (x, y) if classes else (x[~mask], y[~mask])
        forget, remain = batches(xf, yf), batches(xr, yr)
        evaluate = lambda net: evaluate_segmentation(net, forget, None if classes else remain, test,
                                                     forget_classes=classes)  # noqa: E731
        rows, times = {}, {}
        rows["original"] = segmentation_summary_rows(evaluate(original))
        retrained, times["retrain"] = train(network(), xr, yr, epochs, 5e-3, args.seed + 1, tuple(spec["classes"]))
        rows["retrain"] = segmentation_summary_rows(evaluate(retrained))
        finetuned, times["finetune"] = train(copy.deepcopy(original), xr, yr, ft_epochs, 1e-3, args.seed + 2,
                                             tuple(spec["classes"]))
        rows["finetune"] = segmentation_summary_rows(evaluate(finetuned))
        config = PSGConfig(eps=0.3, eps_mode="relative", phi=1.0, seed=args.seed)
        psg, result = unlearn(original, forget, remain, config=config, epochs=psg_epochs, lr=0.01,
                              task="segmentation", forget_classes=classes, evaluate=False, progress=False,
                              regime="fixed")
        times["psg"] = result.time_s
        rows["psg"] = segmentation_summary_rows(evaluate(psg))
        table = format_table(rows)
        print(f"\n== forget {'class ' + TISSUE_CLASSES[args.forget_class] if classes else args.forget_device} "
              f"({int(mask.sum())} forget slices) ==\n{table}\n"
              + "time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()) + f"; original training {t_orig:.1f}")
        record["scenarios"][name] = {"rows": rows, "time_s": times, "forget_slices": int(mask.sum()),
                                     "psg_config": config.to_dict(), "table": table}
        slice_index = len(xt) // 2
        with torch.no_grad():
            preds = {k: m(xt[slice_index : slice_index + 1]).argmax(1)[0]
                     for k, m in (("original", original), ("PSG", psg), ("fine-tune", finetuned), ("retrain", retrained))}
        figure(out_dir / f"segmentation_{name}{suffix}.png", xt[slice_index, 0], yt[slice_index, 0], preds,
               f"forget {'class ' + TISSUE_CLASSES[args.forget_class] if classes else args.forget_device}: "
               f"test slice {test_items[slice_index]['case']} z={test_items[slice_index]['slice']}")
    with open(out_dir / f"segmentation{suffix}.json", "w") as f:
        json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
