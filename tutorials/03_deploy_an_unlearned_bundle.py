# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Deploy an unlearned bundle with the MONAI Deploy App SDK
#
# The unlearn command writes a complete new bundle whose `models/model.ts` is TorchScript with the bundle's
# `metadata.json` and `inference.json` embedded (as `python -m monai.bundle ckpt_export` writes it). That file
# is all a MONAI Deploy application needs. `monai_unlearn.deploy.app` is such an application:
#
# ```bash
# .venv-deploy/bin/python -m monai_unlearn.deploy.app -i IN -o OUT -m BUNDLE/models/model.ts
# ```
#
# It reads NIfTI files, runs the bundle's own preprocessing, inferer and postprocessing with the SDK's
# `MonaiBundleInferenceOperator` and writes `OUT/predictions.json` (class probabilities and argmax per file).
# A folder of DICOM series works the same way (found by content, or `--input-format dicom`): the SDK's DICOM
# operators make one volume per series, this slice classifier classifies each slice, and the app writes one
# `OUT/<SeriesInstanceUID>.json` per series with per-slice predictions and a series summary
# (`monai_unlearn/deploy/README.md` has the details). This tutorial uses NIfTI slices.
# The SDK lives in its own environment, made once by `bash scripts/setup_deploy_env.sh`.
#
# This tutorial:
#
# 1. copies the example bundle `bundles/slice_classifier` and trains it briefly,
# 2. exports the original model as `model.ts` and unlearns one scanner into a new bundle,
# 3. runs the deploy app with each `model.ts` on a few NIfTI slices,
# 4. checks the app's predictions against direct TorchScript inference and compares the two models.
#
# Run it as a script (`python tutorials/03_deploy_an_unlearned_bundle.py --quick`) or as a notebook.
# Bundle configs execute code (`$` expressions): only run and deploy bundles you trust.

# %% [markdown]
# ## Setup

# %%
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from monai.bundle import ConfigParser

from monai_unlearn.bundle import export_torchscript, load_bundle_weights
from monai_unlearn.deploy import deploy_python, has_deploy_sdk

torch.set_num_threads(1)
try:
    REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
except NameError:  # in a notebook opened from tutorials/
    REPO_ROOT = os.path.dirname(os.path.abspath(os.getcwd()))
EXAMPLE_BUNDLE = os.path.join(REPO_ROOT, "bundles", "slice_classifier")
OVERLAY = "bundles/unlearn/configs/unlearn.json"
FORGET_DEVICE = "invesalius_cranium"  # the retired scanner: the only head-CT volume
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run(cmd: list[str], what: str, log_path: str) -> float:
    """Run ``cmd`` from the repository root, keep its output in ``log_path``; returns the seconds."""
    print("$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=ENV)
    with open(log_path, "w") as log:
        log.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.stderr.write((proc.stdout + proc.stderr)[-6000:])
        raise SystemExit(f"{what} failed (exit code {proc.returncode}); full output in {log_path}")
    elapsed = time.perf_counter() - start
    print(f"  {what}: {elapsed:.1f} s", flush=True)
    return elapsed


# %% [markdown]
# ## 1. A trained bundle
#
# As in tutorial 02: copy the bundle's definition and train it with `python -m monai.bundle run`.


# %%
def train_bundle(workdir: str, epochs: int) -> tuple[str, str]:
    """Copy and train the example bundle; returns its root and data folder."""
    bundle, dataset_dir = os.path.join(workdir, "slice_classifier"), os.path.join(workdir, "data")
    shutil.rmtree(bundle, ignore_errors=True)
    shutil.copytree(EXAMPLE_BUNDLE, bundle, ignore=shutil.ignore_patterns("data", "models", "eval", "__pycache__"))
    run([sys.executable, "-m", "monai.bundle", "run", "--config_file", f"{bundle}/configs/train.json",
         "--bundle_root", bundle, "--dataset_dir", dataset_dir, "--epochs", str(epochs)],
        f"training {epochs} epochs", os.path.join(workdir, "train.log"))
    return bundle, dataset_dir


# %% [markdown]
# ## 2. Two deployable models: the original and the unlearned
#
# The original bundle has only `model.pt`; `export_torchscript` writes its `model.ts` the way
# `monai.bundle ckpt_export` does. The unlearn command writes the new bundle with its own `model.ts`.


# %%
def export_original(bundle: str) -> str:
    """Write ``<bundle>/models/model.ts`` from the trained weights; returns its path."""
    parser = ConfigParser()
    parser.read_config(os.path.join(bundle, "configs", "inference.json"))
    net = load_bundle_weights(parser.get_parsed_content("network_def", lazy=False), f"{bundle}/models/model.pt")
    with open(os.path.join(bundle, "configs", "metadata.json")) as f:
        meta = json.load(f)
    return export_torchscript(net, os.path.join(bundle, "models", "model.ts"), meta,
                              {"inference": os.path.join(bundle, "configs", "inference.json")}, torch.rand(1, 1, 64, 64))


def unlearn_bundle(bundle: str, dataset_dir: str, output_dir: str, epochs: int, workdir: str) -> str:
    """Unlearn ``FORGET_DEVICE`` into ``output_dir``; returns the new ``model.ts``."""
    shutil.rmtree(output_dir, ignore_errors=True)
    run([sys.executable, "-m", "monai.bundle", "run", "unlearn",
         "--config_file", f"['{bundle}/configs/train.json', '{OVERLAY}']",
         "--meta_file", f"{bundle}/configs/metadata.json", "--bundle_root", bundle, "--dataset_dir", dataset_dir,
         "--forget", f"device={FORGET_DEVICE}", "--output_dir", output_dir, "--unlearn_epochs", str(epochs),
         "--unlearn_progress", "False"], f"unlearning device {FORGET_DEVICE!r}", os.path.join(workdir, "unlearn.log"))
    return os.path.join(output_dir, "models", "model.ts")


# %% [markdown]
# ## 3. Run the deploy app on NIfTI slices
#
# The inputs are a few training slices of the forgotten scanner and of the other scanners, copied into one
# folder. The app runs in the deploy environment (`.venv-deploy`, or this interpreter if it has the SDK).


# %%
def pick_inputs(bundle: str, dataset_dir: str, folder: str, per_group: int = 3) -> dict[str, str]:
    """Copy ``per_group`` forgotten and kept training slices into ``folder``; returns path -> device."""
    parser = ConfigParser()
    parser.read_config(os.path.join(bundle, "configs", "train.json"))
    parser["bundle_root"], parser["dataset_dir"] = bundle, dataset_dir
    train = parser.get_parsed_content("train_datalist")
    forgotten = [d for d in train if d["device"] == FORGET_DEVICE][:per_group]
    kept, labels = [], set()
    for d in train:  # one slice of each other class
        if d["device"] != FORGET_DEVICE and d["label"] not in labels and len(kept) < per_group:
            kept.append(d)
            labels.add(d["label"])
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    chosen = {}
    for item in forgotten + kept:
        path = os.path.join(folder, os.path.basename(item["image"]))
        shutil.copy2(item["image"], path)
        chosen[path] = item["device"]
    return chosen


def run_app(python: str, model_ts: str, inputs: str, output: str, workdir: str) -> dict:
    """``python -m monai_unlearn.deploy.app -i inputs -o output -m model_ts``; returns predictions.json."""
    run([python, "-m", "monai_unlearn.deploy.app", "-i", inputs, "-o", output, "-m", model_ts],
        f"deploy app with {os.path.relpath(model_ts, workdir)}", output + ".log")
    with open(os.path.join(output, "predictions.json")) as f:
        return json.load(f)


# %% [markdown]
# ## 4. Check and compare
#
# The app must give what the bundle gives: load `model.ts` with `torch.jit.load`, read its embedded
# `inference.json`, apply the preprocessing to each file, infer, softmax.


# %%
def direct_probabilities(model_ts: str, files: list[str]) -> dict[str, list[float]]:
    """Softmax of ``model_ts`` on each file after the embedded preprocessing."""
    extra = {"inference.json": ""}
    net = torch.jit.load(model_ts, map_location="cpu", _extra_files=extra).eval()
    preprocessing = ConfigParser(json.loads(extra["inference.json"])).get_parsed_content("preprocessing")
    with torch.no_grad():
        return {f: torch.softmax(net(torch.as_tensor(preprocessing({"image": f})["image"])[None].float()), 1)[0].tolist()
                for f in files}


def compare(chosen: dict[str, str], predictions: dict[str, dict], models: dict[str, str]) -> None:
    """Check the app against direct inference and print both models' predicted classes."""
    for name, model_ts in models.items():
        for path, probs in direct_probabilities(model_ts, list(chosen)).items():
            app_probs = predictions[name][path]["probabilities"]
            if max(abs(a - b) for a, b in zip(app_probs, probs)) > 1e-5:
                raise SystemExit(f"{name}: the app's probabilities for {path} differ from direct inference")
    print("app predictions match direct TorchScript inference for both bundles")
    print(f"{'slice':34s}{'device':22s}{'original':>12s}{'unlearned':>12s}")
    for path, device in chosen.items():
        row = [predictions[n][path].get("class_name", predictions[n][path]["argmax"]) for n in ("original", "unlearned")]
        print(f"{os.path.basename(path):34s}{device:22s}{row[0]:>12s}{row[1]:>12s}")


# %% [markdown]
# ## Run everything


# %%
def main(argv: list[str] | None = None) -> dict:
    """Train, export, unlearn, deploy both models, compare; returns the predictions."""
    parser = argparse.ArgumentParser(description="Deploy an unlearned bundle with the MONAI Deploy App SDK.")
    parser.add_argument("--workdir", default=None, help="output folder (default: a new temporary folder)")
    parser.add_argument("--quick", action="store_true", help="fewer training and unlearning epochs")
    args, _ = parser.parse_known_args(argv)
    python = sys.executable if has_deploy_sdk() else deploy_python(REPO_ROOT)
    if python is None:
        raise SystemExit("no MONAI Deploy App SDK environment: run `bash scripts/setup_deploy_env.sh` first.")
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="monai_unlearn_tutorial03_"))
    os.makedirs(workdir, exist_ok=True)
    train_epochs, unlearn_epochs = (5, 6) if args.quick else (20, 15)
    start = time.perf_counter()

    print("== 1. train the bundle")
    bundle, dataset_dir = train_bundle(workdir, train_epochs)
    print("\n== 2. export the original model.ts, unlearn a scanner")
    models = {"original": export_original(bundle),
              "unlearned": unlearn_bundle(bundle, dataset_dir, os.path.join(workdir, "slice_classifier_unlearned"),
                                          unlearn_epochs, workdir)}
    print("\n== 3. run the deploy app")
    chosen = pick_inputs(bundle, dataset_dir, os.path.join(workdir, "inputs"))
    predictions = {name: run_app(python, model_ts, os.path.join(workdir, "inputs"),
                                 os.path.join(workdir, f"predictions_{name}"), workdir)
                   for name, model_ts in models.items()}
    print("\n== 4. check and compare")
    compare(chosen, predictions, models)
    print(f"\ntutorial total {time.perf_counter() - start:.1f} s")
    return predictions


if __name__ == "__main__":
    main()
