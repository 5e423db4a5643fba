# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Compose two unlearning runs, then verify the result
#
# Unlearning trades forgetting against retention: a small search radius with a strong remain term keeps the
# remain set, a large radius with a weak remain term forgets harder. *Model composition* takes the feature
# extractor of the run that kept the most and the classification head of the run that forgot the most.
#
# This tutorial:
#
# 1. copies the example bundle `bundles/slice_classifier` and trains it briefly,
# 2. unlearns one retired scanner twice with the front door `python -m monai_unlearn unlearn` (two settings),
# 3. composes the two new bundles with `python -m monai_unlearn compose`, and refits the head alone on the remain
#    set in Python with `finetune_on_remain`,
# 4. evaluates every model on the same forget / remain / test data,
# 5. checks one unlearned bundle's report with `python -m monai_unlearn verify`.
#
# Run it as a script (`python tutorials/04_compose_two_unlearning_runs.py --quick`) or as a notebook.

# %% [markdown]
# ## Setup

# %%
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset

from monai_unlearn.__main__ import main as front_door
from monai_unlearn.bundle.compose import bundle_network
from monai_unlearn.core import compose_models, finetune_on_remain, select_forget
from monai_unlearn.metrics import evaluate_unlearning, summary_rows
from monai_unlearn.runner import format_table

torch.set_num_threads(1)
try:
    REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
except NameError:  # in a notebook opened from tutorials/
    REPO_ROOT = os.path.dirname(os.path.abspath(os.getcwd()))
DEVICE = "invesalius_cranium"  # the retired scanner (the only head-CT source)


# %% [markdown]
# ## 1. Train the example bundle
#
# Its `train.json` builds the data set (real slices of real volumes) into `dataset_dir` and trains a small DenseNet.

# %%
def train_bundle(workdir: str, epochs: int) -> tuple[str, str]:
    bundle, data = os.path.join(workdir, "slice_classifier"), os.path.join(workdir, "data")
    if os.path.isdir(bundle):
        shutil.rmtree(bundle)
    shutil.copytree(os.path.join(REPO_ROOT, "bundles", "slice_classifier"), bundle,
                    ignore=shutil.ignore_patterns("data", "models", "eval"))
    subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", f"{bundle}/configs/train.json",
                    "--bundle_root", bundle, "--dataset_dir", data, "--epochs", str(epochs)],
                   check=True, capture_output=True)
    return bundle, data


# %% [markdown]
# ## 2. Two unlearning runs, 3. composition
#
# `--set dataset_dir=...` passes the same data location the bundle was trained with.

# %%
RUNS = {"retention": ["--eps", "0.1", "--set", "unlearn_params#phi=4.0", "--lr", "0.001"],
        "forgetting": ["--eps", "0.3", "--set", "unlearn_params#phi=1.0", "--lr", "0.003"]}


def unlearn_twice_and_compose(workdir: str, bundle: str, data: str, epochs: int) -> dict[str, str]:
    outputs = {}
    for name, options in RUNS.items():
        outputs[name] = os.path.join(workdir, f"unlearned_{name}")
        front_door(["unlearn", "--bundle", bundle, "--forget", f"device={DEVICE}", "--output", outputs[name],
                    "--epochs", str(epochs), "--quiet", "--overwrite", "--set", f"dataset_dir={data}", *options])
    outputs["composed"] = os.path.join(workdir, "composed")
    front_door(["compose", "--features", outputs["retention"], "--head", outputs["forgetting"],
                "--output", outputs["composed"], "--overwrite"])
    return outputs


# %% [markdown]
# ## 4. Evaluate everything on the same data
#
# The forget set is the retired scanner's training slices; the remain set the other training slices; the test set
# the bundle's validation slices. The refit variant trains only the composed model's head (`class_layers.`) for
# one pass over the remain set; its feature extractor stays exactly as composed.

# %%
def evaluate_all(bundle: str, data: str, outputs: dict[str, str]) -> dict[str, dict]:
    parser = ConfigParser()
    parser.read_config(f"{bundle}/configs/train.json")
    parser["bundle_root"], parser["dataset_dir"] = bundle, data
    forget, remain = select_forget(list(parser.get_parsed_content("train#dataset#data")), key="device", value=DEVICE)
    transform = parser.get_parsed_content("validate#preprocessing")
    load = lambda items, shuffle=False: DataLoader(Dataset(items, transform), batch_size=16, shuffle=shuffle)  # noqa: E731
    loaders = (load(forget), load(remain), load(list(parser.get_parsed_content("validate#dataset#data"))))
    models = {"original": bundle_network(bundle)}
    models.update({name: bundle_network(path) for name, path in outputs.items()})
    refit = compose_models(models["retention"], models["forgetting"])
    models["composed + head refit"] = finetune_on_remain(refit, load(remain, True), epochs=1, lr=0.001)
    return {name: summary_rows(evaluate_unlearning(m.eval(), *loaders, num_classes=4)) for name, m in models.items()}


# %% [markdown]
# ## 5. Verify a report
#
# `verify` recomputes the forget set (against the audit's hashes) and the recorded accuracies and MIA from the
# source and the unlearned bundle; it exits non-zero when anything differs.

# %%
def verify(output: str, data: str) -> None:
    front_door(["verify", "--unlearned", output, "--set", f"dataset_dir={data}"])


# %%
def main(argv: list[str] | None = None) -> dict:
    """Run the tutorial; returns the evaluation table's rows."""
    parser = argparse.ArgumentParser(description="Compose two unlearning runs, then verify the result.")
    parser.add_argument("--workdir", default=None, help="work folder (default: a new temporary folder)")
    parser.add_argument("--quick", action="store_true", help="fewer training and unlearning epochs")
    args, _ = parser.parse_known_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="monai_unlearn_tutorial04_")
    bundle, data = train_bundle(workdir, epochs=6 if args.quick else 20)
    outputs = unlearn_twice_and_compose(workdir, bundle, data, epochs=6 if args.quick else 15)
    rows = evaluate_all(bundle, data, outputs)
    print(format_table(rows))
    verify(outputs["forgetting"], data)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
