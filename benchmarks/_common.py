"""Shared helpers of the benchmarks: FashionMNIST splits, training with a cache, one evaluation row per model."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from monai_unlearn.apps.fashion_mnist import fashion_mnist_dataset
from monai_unlearn.baselines import run_method
from monai_unlearn.metrics import collect_outputs, evaluate_unlearning, mia_efficacy, summary_rows

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / "runs" / "benchmarks_cache"
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    load = None
    try:
        load = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    return {
        "date": subprocess.run(["date"], capture_output=True, text=True).stdout.strip(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": __import__("os").cpu_count(),
        "cuda": torch.cuda.is_available(),
        "loadavg_at_start": load,
    }


def subset_indices(labels: torch.Tensor, limit: int | None, seed: int) -> torch.Tensor:
    """A class-balanced subset of ``limit`` indices (all when ``None``)."""
    if limit is None or limit >= len(labels):
        return torch.arange(len(labels))
    g = torch.Generator().manual_seed(seed)
    per_class = limit // int(labels.max() + 1)
    out = []
    for c in range(int(labels.max()) + 1):
        idx = torch.nonzero(labels == c)[:, 0]
        out.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.sort(torch.cat(out)).values


def fashion_splits(
    train_limit: int | None, test_limit: int | None, forget_class: int, fraction: float | None, seed: int
) -> dict[str, Any]:
    """Train subset, forget / remain split (whole class or a fraction of it), and the test set."""
    train = fashion_mnist_dataset("train")
    test = fashion_mnist_dataset("test")
    x, y = train.tensors
    keep = subset_indices(y, train_limit, seed)
    x, y = x[keep], y[keep]
    xt, yt = test.tensors
    keep_t = subset_indices(yt, test_limit, seed + 1)
    xt, yt = xt[keep_t], yt[keep_t]
    cls = torch.nonzero(y == forget_class)[:, 0]
    if fraction is not None:
        g = torch.Generator().manual_seed(seed + 2)
        cls = cls[torch.randperm(len(cls), generator=g)[: max(1, int(round(fraction * len(cls))))]]
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[cls] = True
    return {
        "train": TensorDataset(x, y),
        "forget": TensorDataset(x[mask], y[mask]),
        "remain": TensorDataset(x[~mask], y[~mask]),
        "test": TensorDataset(xt, yt),
        "test_forget_class": TensorDataset(xt[yt == forget_class], yt[yt == forget_class]),
        "test_other": TensorDataset(xt[yt != forget_class], yt[yt != forget_class]),
    }


def loader(dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def sample(dataset, n: int, seed: int) -> Subset:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[: min(n, len(dataset))]
    return Subset(dataset, idx.tolist())


def cached_model(
    path: Path, build, train_fn, meta: dict[str, Any], refresh: bool = False
) -> tuple[torch.nn.Module, dict[str, Any], bool]:
    """Load ``path`` if its metadata matches ``meta`` (and not ``refresh``), else train with
    ``train_fn(model) -> (model, info)`` and save."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info_path = path.with_suffix(".json")
    model = build()
    if not refresh and path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("meta") == meta:
            model.load_state_dict(torch.load(path, weights_only=True))
            model.eval()
            return model, info, True
    model, info = train_fn(model)
    info["meta"] = meta
    torch.save(model.state_dict(), path)
    info_path.write_text(json.dumps(info, indent=1))
    return model, info, False


def evaluate_row(
    model: torch.nn.Module, loaders: dict[str, Any], num_classes: int = 10
) -> dict[str, Any]:
    """The benchmark columns for one model: accuracies, loss-MIA mean/std, MIA-efficacy of the entropy,
    confidence and modified-entropy attacks."""
    ev = evaluate_unlearning(model, loaders["forget"], loaders["remain_eval"], loaders["test"], num_classes)
    row = summary_rows(ev)
    row["mia_std"] = None if ev["mia"] is None else ev["mia"]["std"]
    row["test_forget_class_acc"] = None
    if loaders.get("test_forget_class") is not None and len(loaders["test_forget_class"].dataset) > 0:
        logits, labels = collect_outputs(model, loaders["test_forget_class"])
        row["test_forget_class_acc"] = float((logits.argmax(1) == labels).float().mean())
    logits = {k: collect_outputs(model, loaders[k]) for k in ("remain_eval", "test", "forget")}
    eff = mia_efficacy(*logits["remain_eval"], *logits["test"], *logits["forget"])  # all three attacks
    for attack in ("entropy", "confidence", "modified_entropy"):
        row[f"mia_eff_{attack}"] = eff[attack]["efficacy"]
    return row


def gap_to(row: dict[str, Any], ref: dict[str, Any], keys=("forget_acc", "remain_acc", "test_acc", "mia")) -> float:
    """Mean absolute difference to the retrained model's row over ``keys`` (the "average gap")."""
    return float(np.mean([abs(row[k] - ref[k]) for k in keys if row.get(k) is not None and ref.get(k) is not None]))


# columns every benchmark table shares: the attacks after the accuracies, then distance and time
MIA_COLUMNS = [
    ("mia", "MIA mean", ".3f"),
    ("mia_std", "MIA std", ".3f"),
    ("mia_eff_entropy", "MIA-eff (entropy)", ".3f"),
    ("mia_eff_confidence", "MIA-eff (conf.)", ".3f"),
    ("mia_eff_modified_entropy", "MIA-eff (m-entropy)", ".3f"),
]
COST_COLUMNS = [
    ("gap", "dist. to retrain", ".3f"),
    ("time_s", "time (s)", ".1f"),
    ("time_frac", "time / retrain", ".3f"),
]


def retrain_row(ref: dict[str, Any], retrain_time: float, cached: bool) -> dict[str, Any]:
    """The retrained model's table row (the reference of the distance and time columns)."""
    return {"method": "Retrain" + (" (cached)" if cached else ""), **ref, "gap": 0.0, "time_s": retrain_time,
            "time_frac": 1.0}


def method_row(label: str, row: dict[str, Any], ref: dict[str, Any], time_s: float, retrain_time: float,
               epochs: int, lr: float, kwargs: dict[str, Any]) -> dict[str, Any]:
    """One method's table row: its evaluation, distance to retrain, time, and the settings it ran with."""
    return {"method": label, **row, "gap": gap_to(row, ref), "time_s": time_s, "time_frac": time_s / retrain_time,
            "epochs": epochs, "lr": lr, "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}}


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """``columns``: (key, header, format)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("-" if v is None else (format(v, fmt) if fmt else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


__all__ = [
    "DEFAULT_CACHE", "RESULTS", "machine", "fashion_splits", "loader", "sample", "cached_model", "evaluate_row",
    "gap_to", "markdown_table", "timed", "run_method", "MIA_COLUMNS", "COST_COLUMNS", "retrain_row", "method_row",
]
