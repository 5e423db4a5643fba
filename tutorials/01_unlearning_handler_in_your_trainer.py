# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Unlearn a scanner from your own MONAI `SupervisedTrainer`
#
# You trained a classifier with MONAI's `SupervisedTrainer`. Later, one scanner ("device") is retired and its
# images must no longer influence the model. Retraining from scratch without them is the gold standard, but it
# costs a full training run. This tutorial removes the scanner's influence with **PSG boundary unlearning**,
# using your trainer machinery as it is: a second `SupervisedTrainer` iterates over the data to forget, and
# four handlers from `monai_unlearn.handlers` do the rest:
#
# - `PSGUnlearningHandler` turns the trainer into PSG unlearning (labels replaced by boundary-search targets,
#   a remain-set term added to the loss);
# - `UnlearningMetricsHandler` measures forget / remain / test accuracy and a membership-inference score;
# - `ForgetTargetStopper` stops as soon as the forget accuracy reaches a target;
# - `UnlearningReportHandler` writes a JSON record and two PNG plots.
#
# The data are real: 64x64 axial slices of nine real CT and MRI volumes installed offline by
# `scripts/install_data.sh`, four classes (brain MRI, head CT, chest CT, breast MRI), each volume a "device".
#
# Run it as a script (`python tutorials/01_unlearning_handler_in_your_trainer.py --quick`) or open it as a
# notebook (VS Code, or `jupytext --to notebook`) and run the cells in order: each step is a function, and the
# last cell calls them one after another.

# %% [markdown]
# ## Setup
#
# Two CPU cores are enough; one thread per process keeps the run fast when other jobs share the machine.

# %%
from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import tempfile
import time

import torch
from ignite.metrics import Accuracy
from monai.data import CacheDataset, DataLoader
from monai.engines import SupervisedTrainer
from monai.handlers import from_engine
from monai.networks.nets import DenseNet
from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged, RandFlipd
from monai.utils import set_determinism

from monai_unlearn import PSGConfig, select_forget
from monai_unlearn.apps import VOLUME_SLICE_CLASSES, build_volume_slice_datalist, datalist_counts, split_train_test
from monai_unlearn.handlers import (
    ForgetTargetStopper,
    PSGUnlearningHandler,
    UnlearningMetricsHandler,
    UnlearningReportHandler,
)
from monai_unlearn.metrics.evaluation import summary_rows
from monai_unlearn.runner import format_table

torch.set_num_threads(1)
DEVICE = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
FORGET_DEVICE = "invesalius_cranium"  # the retired scanner: the head-CT volume

# %% [markdown]
# ## 1. The data: a MONAI datalist
#
# `build_volume_slice_datalist` writes the slices as 2D NIfTI files into a folder of your choice and returns a
# MONAI datalist: `{"image": path, "label": int, "class_name": ..., "device": ..., "slice": ...}`. A second
# call with the same settings reads the cached list back. `split_train_test` holds out 20 % of the slices of
# every device as test data.


# %%
def prepare_data(workdir: str) -> tuple[list[dict], list[dict]]:
    """Build (or reuse) the slice datalist under ``workdir/data`` and split it into train and test."""
    datalist = build_volume_slice_datalist(os.path.join(workdir, "data"), image_size=64)
    train, test = split_train_test(datalist, test_fraction=0.2, seed=0)
    print(f"{len(datalist)} slices: {len(train)} train, {len(test)} test")
    for device, count in datalist_counts(train)["device"].items():
        print(f"  {device:22s} {count:3d} training slices")
    return train, test


# %% [markdown]
# ## 2. Transforms and loaders
#
# The usual MONAI dictionary transforms: `LoadImaged` reads the NIfTI slice, `EnsureChannelFirstd` gives it
# a channel, `EnsureTyped` makes it a float tensor (and the label a long). The slices are already scaled to
# `[0, 1]`. Training adds a random flip; unlearning and evaluation use the deterministic transforms only, so a
# slice looks the same to the boundary search on every pass. `CacheDataset` keeps the small data set in memory.

# %%
DETERMINISTIC = [
    LoadImaged(keys="image", image_only=True),
    EnsureChannelFirstd(keys="image"),
    EnsureTyped(keys="image", dtype=torch.float32),
    EnsureTyped(keys="label", dtype=torch.long, track_meta=False),
]


def make_loader(items: list[dict], shuffle: bool, augment: bool = False, batch_size: int = 16) -> DataLoader:
    """A MONAI ``DataLoader`` over a cached dataset of ``items``."""
    transforms = DETERMINISTIC + ([RandFlipd(keys="image", prob=0.5, spatial_axis=0)] if augment else [])
    dataset = CacheDataset(items, Compose(transforms), cache_rate=1.0, num_workers=0, progress=False)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0)


# %% [markdown]
# ## 3. Train the classifier, as you normally would
#
# A small `DenseNet` (the network of `bundles/slice_classifier/configs/train.json`) trained by a plain
# `SupervisedTrainer` with Adam. Nothing here knows about unlearning.


# %%
def make_network() -> torch.nn.Module:
    """The example bundle's network: a small 2D DenseNet with four outputs."""
    return DenseNet(spatial_dims=2, in_channels=1, out_channels=len(VOLUME_SLICE_CLASSES), init_features=8,
                    growth_rate=8, block_config=(2, 2, 2), bn_size=2)


def train_classifier(train: list[dict], epochs: int, workdir: str) -> torch.nn.Module:
    """Train the DenseNet on ``train`` for ``epochs`` epochs and save it at ``workdir/model.pt``."""
    set_determinism(seed=0)
    network = make_network().to(DEVICE)
    trainer = SupervisedTrainer(
        device=DEVICE,
        max_epochs=epochs,
        train_data_loader=make_loader(train, shuffle=True, augment=True),
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), lr=1e-3),
        loss_function=torch.nn.CrossEntropyLoss(),
        key_train_metric={"train_accuracy": Accuracy(output_transform=from_engine(["pred", "label"]))},
        amp=False,
    )
    start = time.perf_counter()
    trainer.run()
    print(f"trained {epochs} epochs in {time.perf_counter() - start:.1f} s; "
          f"last-epoch training accuracy {trainer.state.metrics['train_accuracy']:.3f}")
    torch.save(network.state_dict(), os.path.join(workdir, "model.pt"))
    return network


# %% [markdown]
# ## 4. Choose what to forget
#
# `select_forget` splits the *training* datalist on any datalist key: here every slice of the retired
# scanner. The rest is the remain set, which the unlearning must protect. The test split stays as it is:
# it still holds held-out slices of the retired scanner, exactly as the test set of a model retrained without
# the scanner would.


# %%
def choose_forget_set(train: list[dict], device: str = FORGET_DEVICE) -> tuple[list[dict], list[dict]]:
    """Split ``train`` into the slices of ``device`` (forget) and all others (remain)."""
    forget, remain = select_forget(train, key="device", value=device)
    print(f"forget {len(forget)} training slices of {device!r}; keep {len(remain)}")
    return forget, remain


# %% [markdown]
# ## 5. Unlearn with a `SupervisedTrainer` and four handlers
#
# The unlearning trainer is an ordinary `SupervisedTrainer` whose `train_data_loader` yields the **forget**
# data, with an SGD optimizer at a small learning rate. Its `loss_function` is only a placeholder: while the
# engine runs, `PSGUnlearningHandler` wraps `prepare_batch` (labels become the labels the frozen original
# model gives at the nearest decision boundary, found by a sign-gradient search within `eps` of each image)
# and replaces the loss with `forget loss + phi * remain loss`, drawing remain batches from its own loader.
# Both are put back when the run ends.
#
# The parameters are the defaults of the bundle overlay (`bundles/unlearn/configs/unlearn.json`): a search
# radius of 20 % of each batch's intensity range, one search step, hard targets and `phi = 4`.
#
# **Handler order matters** at the same event: ignite runs handlers in attach order, so the metrics handler
# comes before the stopper that reads its `forget_accuracy`. Here the stopper ends the run once the forget
# accuracy is at or below 0.05 (a model retrained without the head-CT scanner cannot recognise head CT at
# all: its forget accuracy is 0). The report handler writes `unlearning_report.json`,
# `unlearning_curves.png` and `per_class_accuracy.png` on completion (also after an early stop).


# %%
def unlearn_device(
    network: torch.nn.Module,
    forget: list[dict],
    remain: list[dict],
    test: list[dict],
    max_epochs: int,
    report_dir: str,
) -> tuple[torch.nn.Module, UnlearningReportHandler, ForgetTargetStopper]:
    """Unlearn ``forget`` from a copy of ``network``; returns the revised copy, the report and the stopper."""
    set_determinism(seed=0)  # seeds the loaders' shuffling: the same run gives the same model
    model = copy.deepcopy(network)  # keep the original for comparison; unlearning revises `model` in place
    forget_loader = make_loader(forget, shuffle=True)
    remain_loader = make_loader(remain, shuffle=True)
    config = PSGConfig(eps=0.2, eps_mode="relative", num_steps=1, phi=4.0, target="hard", seed=0)

    psg = PSGUnlearningHandler(config, remain_data_loader=remain_loader)
    metrics = UnlearningMetricsHandler(
        forget_data_loader=make_loader(forget, shuffle=False),
        remain_data_loader=make_loader(remain, shuffle=False),
        test_data_loader=make_loader(test, shuffle=False),
        num_classes=len(VOLUME_SLICE_CLASSES),
    )
    stopper = ForgetTargetStopper(target=0.05, metric_name="forget_accuracy", mode="min")
    report = UnlearningReportHandler(report_dir, metrics_handler=metrics,
                                     extra={"forget": f"device={FORGET_DEVICE}", "num_forgotten": len(forget)})

    unlearner = SupervisedTrainer(
        device=DEVICE,
        max_epochs=max_epochs,
        train_data_loader=forget_loader,
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9),
        loss_function=torch.nn.CrossEntropyLoss(),  # replaced by the PSG objective while the handler runs
        train_handlers=[psg, metrics, stopper, report],  # metrics before the stopper that reads them
        amp=False,
    )
    unlearner.run()
    print(f"unlearning: {unlearner.state.epoch} epoch(s), {unlearner.state.iteration} iterations, "
          f"stopped by {stopper.reason or 'max_epochs'}; last boundary flip rate "
          f"{float(psg.flip_rate) if psg.flip_rate is not None else float('nan'):.2f}")
    return model, report, stopper


# %% [markdown]
# ## 6. Before and after
#
# The report holds the full evaluations `before` (the original model) and `after` (the revised one): accuracy
# per set and per class, and `mia`, the accuracy of a loss-based membership-inference attack telling forget
# slices from test slices (0.5 means chance). The forgotten scanner was the only head-CT source, so after
# unlearning the model no longer recognises head CT: forget accuracy falls to about 0, remain accuracy stays,
# and test accuracy drops by about the share of head-CT test slices (18 of 63), as it would for a model
# retrained without the scanner. The numbers vary a little with the number of training epochs.


# %%
def show_results(report: UnlearningReportHandler) -> dict:
    """Print the before/after table and where the report and plots are; return the record."""
    record = report.record
    print(format_table({"before": summary_rows(record["before"]), "after": summary_rows(record["after"])}))
    print(f"{record['method']} took {record['unlearning_time_s']:.1f} s "
          f"(+ {record['evaluation_time_s']:.1f} s of evaluation)")
    for kind, path in report.paths.items():
        print(f"  {kind:10s} {path}")
    per_class = record["after"]["test"]["per_class"]
    print("test accuracy per class after unlearning: "
          + ", ".join(f"{VOLUME_SLICE_CLASSES[int(c)]} {v:.2f}" for c, v in per_class.items() if v is not None))
    return record


# %% [markdown]
# ## 7. Alternatively: the `UnlearningTrainer` engine
#
# If you do not need to reuse an existing trainer, `monai_unlearn.engines.UnlearningTrainer` is an engine in
# the style of `SupervisedTrainer` whose iteration is one PSG step. It fires MONAI's `IterationEvents`, so
# `StatsHandler`, `CheckpointSaver` and the three other handlers above attach to it the same way:
#
# ```python
# from monai_unlearn.engines import UnlearningTrainer
# engine = UnlearningTrainer(
#     device=DEVICE, max_epochs=15, forget_data_loader=forget_loader, network=model,
#     optimizer=torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9),
#     config=config, remain_data_loader=remain_loader, train_handlers=[metrics, stopper, report],
# )
# engine.run()
# ```
#
# With `phi = 0` it gives the same weights as the handler; with a remain term the two differ slightly for
# networks with BatchNorm (the engine forwards forget and remain images in one batch, the handler in two).

# %% [markdown]
# ## Run everything
#
# `--quick` trains for fewer epochs (about a minute on two CPU cores in all). In a notebook, this cell runs
# with the defaults; call `main(["--quick"])` for the short version.


# %%
def main(argv: list[str] | None = None) -> dict:
    """Train, unlearn one scanner, and print the before/after metrics; returns the report record."""
    parser = argparse.ArgumentParser(description="Unlearn a scanner with PSGUnlearningHandler in a SupervisedTrainer.")
    parser.add_argument("--workdir", default=None, help="output folder (default: a new temporary folder)")
    parser.add_argument("--quick", action="store_true", help="fewer training and unlearning epochs")
    args, _ = parser.parse_known_args(argv)  # tolerate a notebook kernel's own arguments
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="monai_unlearn_tutorial01_"))
    os.makedirs(workdir, exist_ok=True)
    logging.basicConfig(stream=sys.stdout, level=logging.WARNING)
    train_epochs, unlearn_epochs = (6, 8) if args.quick else (20, 15)
    start = time.perf_counter()

    print("== 1. data")
    train, test = prepare_data(workdir)
    print("\n== 3. training the classifier")
    network = train_classifier(train, train_epochs, workdir)
    print("\n== 4. forget set")
    forget, remain = choose_forget_set(train)
    print("\n== 5. unlearning")
    report_dir = os.path.join(workdir, "unlearning")
    model, report, _ = unlearn_device(network, forget, remain, test, unlearn_epochs, report_dir)
    torch.save(model.state_dict(), os.path.join(workdir, "model_unlearned.pt"))
    print("\n== 6. results")
    record = show_results(report)
    print(f"\noriginal weights: {os.path.join(workdir, 'model.pt')}")
    print(f"unlearned weights: {os.path.join(workdir, 'model_unlearned.pt')}")
    print(f"tutorial total {time.perf_counter() - start:.1f} s")
    return record


if __name__ == "__main__":
    main()
