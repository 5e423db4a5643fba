"""Benchmark 5, device forgetting: forget every training image of one source / scanner, every method.

    python benchmarks/device_forgetting.py --threads 1                          # both tasks, default devices
    python benchmarks/device_forgetting.py --task slices --forget-device colin27
    python benchmarks/device_forgetting.py --task brain --forget-scanner colin27
    python benchmarks/device_forgetting.py --quick                              # CI smoke run (seconds)

Two tasks, each with a device (source) key per image:

* ``slices``: the real-volume slice dataset of ``monai_unlearn.apps.volume_slices`` (4 classes by anatomy and
  modality; each of the 9 source volumes is one device). The default forget device is ``pyradiomics_lung2``, a
  chest CT whose class keeps another source (``pyradiomics_lung1``), so the retrained model still knows the
  class and good forgetting means *matching retrain*, not driving the forget accuracy to 0.
* ``brain``: 10 AAL regions on the Colin27 grid (``monai_unlearn.apps.brain_regions``) with Colin27 and the
  MNI152 template as two scanners; the default forgets the ``mni152`` scanner.

Each device's images are split by slice (``split_train_test``): the training part of the forget device is the
forget set, the training part of the other devices the remain set; the held-out part of the kept devices is the
test set (test accuracy and the held-out side of both attacks), the held-out part of the forget device is
reported on its own ("test acc (forget device)") to show whether a method forgets the device on images it never
saw or only the memorised forget items. The original model (all training images) and the model retrained
without the forget device are cached under ``--cache``; every method of ``monai_unlearn.baselines`` starts from
the same original on the same loaders. Columns as in ``fashion_mnist_protocol.py`` (the "MIA" attack separates
forget items from the kept devices' test images, so a change of device alone moves it), plus "MIA vs
forget-device test": the same loss attack against held-out images of the forget device itself (same
distribution; 0.5 = the forget items look unseen). Records go to ``--out/device_<task>.{json,md}``
(``_quick`` appended with ``--quick``, the device appended when it is not the default).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    COST_COLUMNS,
    DEFAULT_CACHE,
    MIA_COLUMNS,
    RESULTS,
    cached_model,
    evaluate_row,
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

from monai_unlearn.apps.brain_regions import BRAIN_REGION_DEVICES, BRAIN_REGIONS, build_brain_region_patches  # noqa: E402
from monai_unlearn.apps.volume_slices import (  # noqa: E402
    VOLUME_SLICE_CLASSES,
    VOLUME_SOURCES,
    build_volume_slice_datalist,
    split_train_test,
)
from monai_unlearn.metrics import collect_outputs, membership_inference_score, per_sample_loss  # noqa: E402

TASKS = ("slices", "brain")
DEFAULT_FORGET = {"slices": "pyradiomics_lung2", "brain": "mni152"}

# per task: image / dataset sizes and the training of the original and retrained models (Adam, batch --batch-size)
TASK_DEFAULTS = {
    "slices": {"image_size": 64, "slices_per_volume": None, "epochs": 15},
    "brain": {"n_per_class": 150, "patch_size": 32, "epochs": 10},
}

# method -> (epochs, lr, kwargs); epochs count passes over the remain set, except for the PSG family (forget set).
# The same for both tasks and not tuned; the small remain sets here (214 slices / 1,200 patches) get a few
# passes more than the FashionMNIST protocol so that each method takes a sensible number of steps.
METHOD_SETTINGS = {
    "finetune": (3, 0.01, {}),
    "neggrad_plus": (3, 0.01, {"beta": 0.95}),
    "cf_k": (3, 0.01, {"k": 2}),
    "eu_k": (5, 0.01, {"k": 2}),
    "scrub": (3, 0.005, {"msteps": 1}),
    "boundary_shrink": (5, 1e-3, {"eps": 0.1, "value_range": (0.0, 1.0)}),
    "psg": (5, 1e-3, {"eps": 0.1, "value_range": (0.0, 1.0), "num_steps": 2, "gamma": 0.5, "lam": 0.1,
                      "phi": 1.0, "seed": 0}),
}
# PSG with unlearn(regime="auto"): the same parameters, 15 passes as the budget, calibrated on the validation images of
# the kept devices (--val-fraction, never the test images); only run when asked for (--methods ...,psg_calibrated)
CALIBRATED = {"psg_calibrated": (15, 1e-3, {**METHOD_SETTINGS["psg"][2], "regime": "auto"})}

COLUMNS = [
    ("method", "method", ""),
    ("forget_acc", "forget acc", ".3f"),
    ("remain_acc", "remain acc", ".3f"),
    ("test_acc", "test acc (kept devices)", ".3f"),
    ("test_forget_device_acc", "test acc (forget device)", ".3f"),
    *MIA_COLUMNS,
    ("mia_device", "MIA vs forget-device test", ".3f"),
    *COST_COLUMNS,
]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI-sized smoke run")
    p.add_argument("--task", choices=[*TASKS, "both"], default="both")
    p.add_argument("--forget-device", default=DEFAULT_FORGET["slices"],
                   help="slices task: the source volume to forget (see monai_unlearn.apps.volume_slices.VOLUME_SOURCES)")
    p.add_argument("--forget-scanner", default=DEFAULT_FORGET["brain"], choices=list(BRAIN_REGION_DEVICES),
                   help="brain task: the scanner to forget")
    p.add_argument("--image-size", type=int, default=TASK_DEFAULTS["slices"]["image_size"], help="slices: side in px")
    p.add_argument("--slices-per-volume", type=int, default=None,
                   help="slices: most slices per volume (default: each source's own default, 313 slices in all)")
    p.add_argument("--n-per-class", type=int, default=TASK_DEFAULTS["brain"]["n_per_class"],
                   help="brain: patches per region per scanner")
    p.add_argument("--patch-size", type=int, default=TASK_DEFAULTS["brain"]["patch_size"], help="brain: side in px")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share of each device's images")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="share of the kept devices' held-out images set aside for calibration (psg_calibrated)")
    p.add_argument("--tag", default="", help="suffix of the result files (e.g. _seed1)")
    p.add_argument("--width", type=float, default=0.25, help="AllCNN width (0.25 = narrow CPU variant)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs of original and retrained models (default: slices 15, brain 10)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate of original and retrained models")
    p.add_argument("--methods", default=",".join(["retrain", *METHOD_SETTINGS]))
    p.add_argument("--remain-eval", type=int, default=600, help="remain samples used for evaluation and the attacks")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.epochs_by_task = {t: args.epochs or TASK_DEFAULTS[t]["epochs"] for t in TASKS}
    if args.quick:
        args.image_size, args.slices_per_volume, args.n_per_class, args.patch_size = 24, 10, 12, 16
        args.width, args.remain_eval = 0.0625, 100
        args.epochs_by_task = {t: 1 for t in TASKS}
        args.cache = args.cache / "quick"
    return args


def _tensors(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32),
                         torch.as_tensor(labels, dtype=torch.long))


def device_splits(entries: list[dict], images: np.ndarray, forget: str, test_fraction: float, seed: int,
                  val_fraction: float = 0.0) -> dict:
    """Forget / remain (training part of the forget / kept devices), test (kept devices) and forget-device test;
    with ``val_fraction`` that share of the kept devices' held-out images becomes a validation split (``val``) for
    retrain-free calibration, and the test split is the rest."""
    train, test = split_train_test(entries, test_fraction=test_fraction, seed=seed)
    val: list = []
    if val_fraction:
        kept = [e for e in test if e["device"] != forget]
        order = np.random.default_rng(seed + 1).permutation(len(kept))
        val = [kept[i] for i in order[: int(round(val_fraction * len(kept)))]]
        chosen = {id(e) for e in val}
        test = [e for e in test if id(e) not in chosen]
    index = {id(e): i for i, e in enumerate(entries)}
    labels = np.array([e["label"] for e in entries])
    pick = lambda part, keep: np.array([index[id(e)] for e in part if keep(e["device"])], dtype=np.int64)  # noqa: E731
    groups = {
        "train": pick(train, lambda d: True),
        "forget": pick(train, lambda d: d == forget),
        "remain": pick(train, lambda d: d != forget),
        "test": pick(test, lambda d: d != forget),
        "test_forget_device": pick(test, lambda d: d == forget),
        "val": pick(val, lambda d: True),
    }
    out = {k: _tensors(images[v], labels[v]) for k, v in groups.items()}
    out["counts"] = {k: int(len(v)) for k, v in groups.items()}
    return out


def slice_task(args) -> dict:
    """The real-volume slices: 9 source volumes (devices), 4 classes; forget ``--forget-device``."""
    forget = args.forget_device
    names = [s.name for s in VOLUME_SOURCES]
    if forget not in names:
        raise ValueError(f"unknown --forget-device {forget!r}; choose from {names}.")
    cls = next(s.class_name for s in VOLUME_SOURCES if s.name == forget)
    others = [s.name for s in VOLUME_SOURCES if s.class_name == cls and s.name != forget]
    folder = args.cache / "device_slices_data" / f"s{args.image_size}_n{args.slices_per_volume}_seed{args.seed}"
    entries = build_volume_slice_datalist(folder, image_size=args.image_size,
                                          slices_per_volume=args.slices_per_volume, seed=args.seed)
    images = np.stack([np.asarray(nib.load(e["image"]).dataobj, dtype=np.float32)[None] for e in entries])
    splits = device_splits(entries, images, forget, args.test_fraction, args.seed, args.val_fraction)
    note = (f"forget device {forget} ({cls}); other sources of {cls} kept: {others}" if others else
            f"forget device {forget} is the only source of {cls}: this is class forgetting, not device forgetting")
    return {"splits": splits, "num_classes": len(VOLUME_SLICE_CLASSES), "forget": forget, "forget_class": cls,
            "other_sources_of_class": others, "note": note, "classes": list(VOLUME_SLICE_CLASSES),
            "data": {"image_size": args.image_size, "slices_per_volume": args.slices_per_volume, "folder": str(folder)}}


def brain_task(args) -> dict:
    """AAL region patches on the Colin27 grid from two scanners (Colin27, MNI152); forget ``--forget-scanner``."""
    images, labels, devices = build_brain_region_patches(args.n_per_class, args.patch_size, seed=args.seed)
    entries = []
    counters: dict[str, int] = {}
    for lab, dev in zip(labels, devices):
        dev = str(dev)
        entries.append({"label": int(lab), "device": dev, "slice": counters.get(dev, 0)})
        counters[dev] = counters.get(dev, 0) + 1
    splits = device_splits(entries, images, args.forget_scanner, args.test_fraction, args.seed, args.val_fraction)
    kept = [d for d in BRAIN_REGION_DEVICES if d != args.forget_scanner]
    note = f"forget scanner {args.forget_scanner}; kept scanner(s) {kept}; every region is imaged by both"
    return {"splits": splits, "num_classes": len(BRAIN_REGIONS), "forget": args.forget_scanner, "forget_class": None,
            "other_sources_of_class": kept, "note": note, "classes": list(BRAIN_REGIONS),
            "data": {"n_per_class": args.n_per_class, "patch_size": args.patch_size}}


def run_task(task: str, args, info: dict) -> dict:
    """Train / load the original and retrained models, run every method, write ``device_<task>[_quick].{json,md}``."""
    start = time.perf_counter()
    load_start = open("/proc/loadavg").read().split()[:3]
    data = slice_task(args) if task == "slices" else brain_task(args)
    splits, num_classes = data["splits"], data["num_classes"]
    print(f"[{task}] {data['note']}; counts {splits['counts']}", flush=True)
    bs, epochs = args.batch_size, args.epochs_by_task[task]
    loaders = {  # evaluation; every method gets fresh seeded training loaders (results do not depend on the order)
        "forget": loader(splits["forget"], 256, False),
        "remain_eval": loader(sample(splits["remain"], args.remain_eval, args.seed), 256, False),
        "test": loader(splits["test"], 256, False),
        # evaluate_row reports this one as its "forget class" test accuracy; renamed below
        "test_forget_class": loader(splits["test_forget_device"], 256, False),
    }
    build = lambda: allcnn(args.width, num_classes=num_classes)  # noqa: E731
    base = {"task": task, **data["data"], "test_fraction": args.test_fraction, "width": args.width, "epochs": epochs,
            "lr": args.lr, "seed": args.seed, "batch_size": bs}

    def trainer(dataset):
        def fit(model):
            torch.manual_seed(args.seed)
            model, result = run_method(
                "retrain", model, None, loader(dataset, bs, True, args.seed), epochs=epochs, lr=args.lr,
                optimizer="adam", seed=args.seed, evaluate=False,
            )
            return model, {"time_s": result.time_s, "iterations": result.iterations, "history": result.history}
        return fit

    def evaluate(model):
        row = evaluate_row(model, loaders, num_classes)
        row["test_forget_device_acc"] = row.pop("test_forget_class_acc")
        # same-distribution attack: forget items vs unseen images of the same device (None with < 5 a side)
        losses = [per_sample_loss(*collect_outputs(model, loaders[k])) for k in ("forget", "test_forget_class")]
        row["mia_device"] = row["mia_device_std"] = None
        if min(len(x) for x in losses) >= 5:
            mia = membership_inference_score(*losses, n_splits=5, seed=args.seed)
            row["mia_device"], row["mia_device_std"] = mia["mean"], mia["std"]
        return row

    stem = "_".join(f"{k}{v}" for k, v in data["data"].items() if k != "folder")
    key = f"device_{task}_{stem}_tf{args.test_fraction}_w{args.width}_e{epochs}_s{args.seed}"
    original, orig_info, orig_cached = cached_model(args.cache / f"{key}_original.pt", build, trainer(splits["train"]), base)
    retrained, re_info, re_cached = cached_model(
        args.cache / f"{key}_retrained_{data['forget']}.pt", build, trainer(splits["remain"]),
        {**base, "forget": data["forget"]},
    )
    retrain_time = re_info["time_s"]
    rows = [{"method": "Original", **evaluate(original), "time_s": orig_info["time_s"], "time_frac": None}]
    ref = evaluate(retrained)
    for name in [m for m in args.methods.split(",") if m]:
        if name == "retrain":
            rows.append(retrain_row(ref, retrain_time, re_cached))
            print(f"[{task}]", rows[-1], flush=True)
            continue
        m_epochs, lr, kwargs = {**METHOD_SETTINGS, **CALIBRATED}[name]
        if args.quick:
            m_epochs = 1
        extra = {}
        if name in CALIBRATED:
            if not len(splits["val"]):
                raise SystemExit("psg_calibrated needs validation images: pass --val-fraction (e.g. 0.5).")
            extra = {"val_loader": loader(splits["val"], 256, False)}
        torch.manual_seed(args.seed)
        model, result = run_method("psg" if name in CALIBRATED else name, original,
                                   loader(splits["forget"], bs, True, args.seed),
                                   loader(splits["remain"], bs, True, args.seed), epochs=m_epochs, lr=lr,
                                   evaluate=False, **kwargs, **extra)
        if name in CALIBRATED:
            result.method, m_epochs = "PSG (regime auto, calibrated)", result.epochs
        row = evaluate(model)
        rows.append(method_row(result.method, row, ref, result.time_s, retrain_time, m_epochs, lr, kwargs))
        print(f"[{task}]", {k: v for k, v in rows[-1].items() if k != "params"}, flush=True)
    rows[0]["gap"] = gap_to(rows[0], ref)

    default = data["forget"] == DEFAULT_FORGET[task]
    tag = f"device_{task}" + ("" if default else f"_{data['forget']}") + ("_quick" if args.quick else "") + args.tag
    table = markdown_table(rows, COLUMNS)
    settings = {**base, "forget_device": data["forget"], "forget_class": data["forget_class"],
                "other_sources_of_class": data["other_sources_of_class"], "classes": data["classes"],
                "remain_eval": args.remain_eval, **{f"n_{k}": v for k, v in splits["counts"].items()}}
    wall = time.perf_counter() - start
    record = {
        "command": " ".join(sys.argv), "task": task, "note": data["note"], "machine": info, "settings": settings,
        "original_cached": orig_cached, "retrained_cached": re_cached, "original_train_time_s": orig_info["time_s"],
        "retrain_time_s": retrain_time, "method_settings": {k: [v[0], v[1], {a: (list(b) if isinstance(b, tuple) else b)
        for a, b in v[2].items()}] for k, v in METHOD_SETTINGS.items()}, "rows": rows, "table": table,
        "wall_time_s": wall, "loadavg_at_task_start": load_start, "loadavg_at_end": open("/proc/loadavg").read().split()[:3],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{tag}.json").write_text(json.dumps(record, indent=1))
    md = [f"# Device forgetting: {task}", "", data["note"] + ".", "", table, "",
          "Settings: " + json.dumps(settings), "", "Method settings (epochs, lr, kwargs): "
          + json.dumps(record["method_settings"]), "", f"Machine: {json.dumps(info)}; load average at the end "
          f"{record['loadavg_at_end']}; wall time of the whole task {wall:.0f} s (original cached: {orig_cached}, "
          f"retrained cached: {re_cached}).", ""]
    (args.out / f"{tag}.md").write_text("\n".join(md))
    print(f"[{task}] {data['note']}")
    print(table, flush=True)
    return record


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    tasks = TASKS if args.task == "both" else (args.task,)
    return {task: run_task(task, args, info) for task in tasks}


if __name__ == "__main__":
    main()
