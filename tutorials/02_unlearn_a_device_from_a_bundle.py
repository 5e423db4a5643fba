# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Unlearn a scanner from a MONAI bundle, from the command line
#
# Your model ships as a MONAI bundle (`configs/`, `models/model.pt`, `docs/`, in the Model Zoo's layout). A
# scanner is retired and its images must stop influencing the model. `monai_unlearn` provides an **overlay**
# config, `bundles/unlearn/configs/unlearn.json`, that you layer over the bundle's own `train.json`:
#
# ```bash
# python -m monai.bundle run unlearn \
#   --config_file "['<B>/configs/train.json', 'bundles/unlearn/configs/unlearn.json']" \
#   --meta_file <B>/configs/metadata.json --bundle_root <B> \
#   --forget device=<x> --output_dir <OUT>
# ```
#
# It reads the bundle's network, deterministic preprocessing, training and validation datalists and weights,
# unlearns the chosen items with PSG boundary unlearning, and writes a **new** bundle at `<OUT>`: configs
# with a bumped version and changelog entry, `models/model.pt`, `models/model.ts` (TorchScript) and
# `unlearning/` with a report, plots and an audit record. The wrapped bundle is only read.
#
# This tutorial does it end to end on the example bundle `bundles/slice_classifier` (a small DenseNet that
# classifies 64x64 slices of nine real CT and MRI volumes; each volume is a "device"):
#
# 1. copy the bundle into a work folder,
# 2. train it with `python -m monai.bundle run`,
# 3. unlearn one device with `python -m monai.bundle run unlearn`,
# 4. read the report and the audit record,
# 5. load the new TorchScript model and run it on a forgotten slice,
# 6. look at the new changelog entry.
#
# Run it as a script (`python tutorials/02_unlearn_a_device_from_a_bundle.py --quick`) or open it as a
# notebook and run the cells in order; the last cell calls the steps one after another.
#
# Bundle configs execute code (`$` expressions and `_target_` components): only run bundles you trust.

# %% [markdown]
# ## Setup

# %%
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from monai.bundle import ConfigParser

from monai_unlearn.apps import VOLUME_SLICE_CLASSES
from monai_unlearn.bundle import load_bundle_weights, sha256_file, sha256_text
from monai_unlearn.metrics.evaluation import summary_rows
from monai_unlearn.runner import format_table

torch.set_num_threads(1)
try:
    REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
except NameError:  # in a notebook opened from tutorials/
    REPO_ROOT = os.path.dirname(os.path.abspath(os.getcwd()))
EXAMPLE_BUNDLE = os.path.join(REPO_ROOT, "bundles", "slice_classifier")
OVERLAY = "bundles/unlearn/configs/unlearn.json"  # relative to REPO_ROOT, where the commands run
FORGET_DEVICE = "invesalius_cranium"  # the retired scanner: the only head-CT volume


def shell_text(cmd: list[str]) -> str:
    """``cmd`` as one would type it in a shell (a list-valued argument in double quotes)."""
    return " ".join(f'"{a}"' if "'" in a and '"' not in a else shlex.quote(a) for a in cmd)


def run_command(cmd: list[str], what: str, log_path: str) -> float:
    """Run ``cmd`` from the repository root, echo it, keep its output in ``log_path``; returns the seconds."""
    print(f"$ {shell_text(cmd)}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    with open(log_path, "w") as log:
        log.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.stderr.write((proc.stdout + proc.stderr)[-6000:])
        raise SystemExit(f"{what} failed (exit code {proc.returncode}); full output in {log_path}")
    print(f"  {what}: {elapsed:.1f} s (output in {log_path})", flush=True)
    return elapsed


# %% [markdown]
# ## 1. Copy the bundle into a work folder
#
# We work on a copy so the repository stays clean. The copy takes only `configs/`, `docs/` and `LICENSE`:
# the data and the weights are made in the next step. The data go to a folder **outside** the bundle,
# passed to every command as `--dataset_dir` (the bundle's `dataset_dir` defaults to `<bundle>/data`).


# %%
def copy_bundle(workdir: str) -> tuple[str, str]:
    """Copy the example bundle to ``workdir/slice_classifier``; returns the bundle root and the data folder."""
    bundle = os.path.join(workdir, "slice_classifier")
    if os.path.isdir(bundle):
        shutil.rmtree(bundle)
    shutil.copytree(EXAMPLE_BUNDLE, bundle, ignore=shutil.ignore_patterns("data", "models", "eval", "__pycache__"))
    print(f"bundle copied to {bundle}: {sorted(os.listdir(bundle))}")
    return bundle, os.path.join(workdir, "data")


# %% [markdown]
# ## 2. Train the bundle
#
# The bundle's `train.json` builds the datalist itself (`monai_unlearn.apps.build_volume_slice_datalist`
# writes the slices under `dataset_dir` on the first run), holds out 20 % of each device's slices for
# validation, and trains with a `SupervisedTrainer`; its `CheckpointSaver` keeps the best validation model at
# `models/model.pt`. Any config id can be overridden on the command line; here `--epochs`.


# %%
def train_bundle(bundle: str, dataset_dir: str, epochs: int, workdir: str) -> float:
    """Train the bundle copy with ``python -m monai.bundle run``; returns the seconds it took."""
    cmd = [sys.executable, "-m", "monai.bundle", "run",
           "--config_file", f"{bundle}/configs/train.json", "--bundle_root", bundle,
           "--dataset_dir", dataset_dir, "--epochs", str(epochs)]
    elapsed = run_command(cmd, f"training {epochs} epochs", os.path.join(workdir, "train.log"))
    print(f"  weights: {bundle}/models/model.pt")
    return elapsed


# %% [markdown]
# ## 3. Unlearn one device
#
# `--forget device=invesalius_cranium` selects every training item whose datalist entry has that `device`
# (any datalist key works, as do `label=1`, `label=1,fraction=0.1,seed=0` or a `.txt`/`.json` file of
# image paths). `--output_dir` must not exist yet. Method settings are config ids too: here the number of
# passes over the forget set (`--unlearn_epochs`), the reason recorded in the audit (`--unlearn_reason`) and
# no progress bar (`--unlearn_progress False`; write `False` with a capital F, which the command line turns
# into a boolean). See `bundles/unlearn/docs/README.md` for all settings, e.g. `--unlearn_params#eps 0.1`.


# %%
def unlearn_bundle(bundle: str, dataset_dir: str, output_dir: str, epochs: int, workdir: str) -> float:
    """Unlearn ``FORGET_DEVICE`` from ``bundle`` into the new bundle ``output_dir``; returns the seconds."""
    if os.path.isdir(output_dir):
        shutil.rmtree(output_dir)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "unlearn",
           "--config_file", f"['{bundle}/configs/train.json', '{OVERLAY}']",
           "--meta_file", f"{bundle}/configs/metadata.json", "--bundle_root", bundle,
           "--dataset_dir", dataset_dir,
           "--forget", f"device={FORGET_DEVICE}", "--output_dir", output_dir,
           "--unlearn_epochs", str(epochs), "--unlearn_reason", f"scanner {FORGET_DEVICE} retired",
           "--unlearn_progress", "False"]
    elapsed = run_command(cmd, f"unlearning device {FORGET_DEVICE!r}", os.path.join(workdir, "unlearn.log"))
    for root, _, files in sorted(os.walk(output_dir)):
        for name in sorted(files):
            print(f"  {os.path.relpath(os.path.join(root, name), output_dir)}")
    return elapsed


# %% [markdown]
# ## 4. The report: what changed
#
# `<OUT>/unlearning/report.json` is the full record of the run:
#
# - `method` (`"PSG"`, or `"Boundary Shrink"` for that special case), `config` (every PSG parameter),
#   `optimizer` (class and hyper-parameters), `epochs`, `iterations` and `time_s` (the unlearning alone);
# - `before` and `after`: for the `forget`, `remain` (kept training items) and `test` (the bundle's validation
#   data) sets, `accuracy`, `per_class` accuracy, `class_counts`, `count` and `mean_loss`; and `mia`, the
#   accuracy of a loss-based membership-inference attack separating forget from test items (`mean` over
#   `n_splits` folds; 0.5 is chance);
# - `retrained` and `retrain_gap`: filled when you pass `--unlearn_retrained_ckpt` with the weights of a model
#   retrained without the forget set (the gold standard), else `null`;
# - `history`: one entry per pass with the loss, its forget and remain parts and the `flip_rate` (share of
#   forget items whose boundary target differs from their label);
# - `selector`, `num_forgotten`, `num_remain`, `source_bundle`, `layout` (which config ids were used as the
#   network, datalists, preprocessing and device) and `monai_unlearn_version`.
#
# The retired scanner was the only head-CT source, so a model without it cannot recognise head CT: forget
# accuracy goes to 0, the remain accuracy stays, and the test accuracy loses exactly the head-CT share.


# %%
def read_report(output_dir: str) -> dict:
    """Print the headline numbers and the main fields of ``report.json``; returns the report."""
    with open(os.path.join(output_dir, "unlearning", "report.json")) as f:
        report = json.load(f)
    rows = {name: summary_rows(report[name]) for name in ("before", "after", "retrained") if report.get(name)}
    print(format_table(rows))
    print(f"method {report['method']}: eps={report['config']['eps']} ({report['config']['eps_mode']}), "
          f"phi={report['config']['phi']}, {report['epochs']} epochs / {report['iterations']} iterations "
          f"in {report['time_s']:.1f} s; optimizer {report['optimizer']['name']} lr={report['optimizer']['lr']}")
    print(f"selector {report['selector']!r}: {report['num_forgotten']} forgotten, {report['num_remain']} kept")
    print(f"bundle parts used: {report['layout']}")
    last = report["history"][-1]
    print(f"last pass: loss {last['loss']:.3f} (forget {last['forget_loss']:.3f}, remain {last['remain_loss']:.3f}), "
          f"flip rate {last['flip_rate']:.2f}")
    test_after = report["after"]["test"]["per_class"]
    print("test accuracy per class after: "
          + ", ".join(f"{VOLUME_SLICE_CLASSES[int(c)]} {v:.2f}" for c, v in test_after.items() if v is not None))
    print(f"plots: {output_dir}/unlearning/curves.png, {output_dir}/unlearning/per_class_accuracy.png")
    return report


# %% [markdown]
# ## 5. The audit record: what was forgotten, and why
#
# `<OUT>/unlearning/audit.json` is meant to be kept as evidence. It lists `created_utc`, the `reason` and
# `selector`, `num_forgotten`, `counts` of forgotten items by label, device and class name, the method
# `parameters` and the headline `metrics` before and after. Each forgotten item appears in `items` only as
# hashes: `id_sha256` (SHA-256 of its path) and `content_sha256` (of the file's bytes), plus its label, so
# the audit does not disclose file names; whoever holds a file can check that it was forgotten.


# %%
def read_audit(output_dir: str, forgotten_path: str) -> dict:
    """Print the audit summary and check ``forgotten_path`` against it; returns the audit."""
    with open(os.path.join(output_dir, "unlearning", "audit.json")) as f:
        audit = json.load(f)
    print(f"created {audit['created_utc']}, reason {audit['reason']!r}, selector {audit['selector']!r}")
    print(f"{audit['num_forgotten']} items forgotten; counts {audit['counts']}")
    print(f"metrics recorded: {audit['metrics']}")
    ids = {item["id_sha256"] for item in audit["items"]}
    contents = {item["content_sha256"] for item in audit["items"]}
    found = sha256_text(forgotten_path) in ids and sha256_file(forgotten_path) in contents
    print(f"is {os.path.basename(forgotten_path)} in the audit (path and content hash)? {found}")
    return audit


# %% [markdown]
# ## 6. Use the new bundle: TorchScript on a forgotten slice
#
# `<OUT>/models/model.ts` is TorchScript with the bundle's `metadata.json` and `inference.json` embedded, as
# `monai.bundle ckpt_export` writes them; `torch.jit.load` reads them back through `_extra_files` (PyTorch
# 2.13 warns that `torch.jit.load` is deprecated in favour of `torch.export`; it still works). We take a
# slice of the retired scanner from the bundle's own training datalist and preprocessing (read with MONAI's
# `ConfigParser`, as the bundle does) and compare the original weights with the unlearned model.


# %%
def forgotten_slice(bundle: str, dataset_dir: str) -> tuple[str, torch.Tensor, ConfigParser]:
    """The path and preprocessed image of one training slice of ``FORGET_DEVICE``, and the bundle's parser."""
    parser = ConfigParser()
    parser.read_config(os.path.join(bundle, "configs", "train.json"))
    parser["bundle_root"] = bundle
    parser["dataset_dir"] = dataset_dir
    train = parser.get_parsed_content("train_datalist")
    item = next(d for d in train if d["device"] == FORGET_DEVICE)
    image = parser.get_parsed_content("validate#preprocessing")(dict(item))["image"]
    return item["image"], image.as_tensor() if hasattr(image, "as_tensor") else image, parser


def compare_on_slice(bundle: str, output_dir: str, image: torch.Tensor, parser: ConfigParser) -> dict:
    """Class probabilities of the original weights and of the unlearned ``model.ts`` on ``image``."""
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(os.path.join(output_dir, "models", "model.ts"), map_location="cpu", _extra_files=extra)
    embedded = json.loads(extra["metadata.json"])
    print(f"model.ts embeds metadata version {embedded['version']} "
          f"and inference.json ({len(extra['inference.json'])} bytes)")
    original = load_bundle_weights(parser.get_parsed_content("network_def", lazy=False), f"{bundle}/models/model.pt")
    batch = image[None].float()  # (1, 1, 64, 64)
    with torch.no_grad():
        probs = {"original": torch.softmax(original.eval()(batch), 1)[0],
                 "unlearned": torch.softmax(scripted(batch), 1)[0]}
    print("class probabilities on a forgotten head-CT slice:")
    print("           " + "".join(c.rjust(12) for c in VOLUME_SLICE_CLASSES))
    for name, p in probs.items():
        values = "".join(f"{v:12.3f}" for v in p.tolist())
        print(f"{name.ljust(11)}{values}   -> {VOLUME_SLICE_CLASSES[int(p.argmax())]}")
    return {name: p.tolist() for name, p in probs.items()}


# %% [markdown]
# ## 7. The changelog entry
#
# The new bundle's `configs/metadata.json` has its patch version bumped and a changelog entry naming the
# method, its parameters and how many items were forgotten, so whoever deploys it can see what happened.


# %%
def show_changelog(bundle: str, output_dir: str) -> dict:
    """Print the old and new version and the new changelog entry; returns the new metadata."""
    with open(os.path.join(bundle, "configs", "metadata.json")) as f:
        old = json.load(f)
    with open(os.path.join(output_dir, "configs", "metadata.json")) as f:
        new = json.load(f)
    print(f"version {old['version']} -> {new['version']}")
    print(f"changelog[{new['version']!r}]: {new['changelog'][new['version']]}")
    return new


# %% [markdown]
# ## Run everything
#
# `--quick` trains and unlearns for fewer epochs (well under a minute and a half on two CPU cores). In a
# notebook this cell runs with the defaults; call `main(["--quick"])` for the short version.


# %%
def main(argv: list[str] | None = None) -> dict:
    """Copy, train, unlearn, and inspect the new bundle; returns the report."""
    parser = argparse.ArgumentParser(description="Unlearn a device from a bundle with `monai.bundle run unlearn`.")
    parser.add_argument("--workdir", default=None, help="output folder (default: a new temporary folder)")
    parser.add_argument("--quick", action="store_true", help="fewer training and unlearning epochs")
    args, _ = parser.parse_known_args(argv)  # tolerate a notebook kernel's own arguments
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="monai_unlearn_tutorial02_"))
    os.makedirs(workdir, exist_ok=True)
    train_epochs, unlearn_epochs = (6, 10) if args.quick else (20, 15)
    output_dir = os.path.join(workdir, "slice_classifier_unlearned")
    start = time.perf_counter()

    print("== 1. copy the bundle")
    bundle, dataset_dir = copy_bundle(workdir)
    print("\n== 2. train it")
    train_bundle(bundle, dataset_dir, train_epochs, workdir)
    print("\n== 3. unlearn a device")
    unlearn_bundle(bundle, dataset_dir, output_dir, unlearn_epochs, workdir)
    print("\n== 4. report")
    report = read_report(output_dir)
    print("\n== 5. audit")
    path, image, bundle_parser = forgotten_slice(bundle, dataset_dir)
    read_audit(output_dir, path)
    print("\n== 6. TorchScript on a forgotten slice")
    compare_on_slice(bundle, output_dir, image, bundle_parser)
    print("\n== 7. changelog")
    show_changelog(bundle, output_dir)
    print(f"\nnew bundle: {output_dir}\ntutorial total {time.perf_counter() - start:.1f} s")
    return report


if __name__ == "__main__":
    main()
