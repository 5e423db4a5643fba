"""The main demo: a scanner is retired, so its images are unlearned from a deployed bundle.

Steps, each a real MONAI bundle command run as a user would type it:

1. train the example bundle ``bundles/slice_classifier`` (real slices from real volumes, each volume a device),
   or reuse the weights of an earlier run;
2. retrain the same bundle without the retired device, as the gold standard to compare with;
3. unlearn the device from the trained bundle with ``python -m monai.bundle run unlearn``, which writes a new
   bundle with a report and an audit file;
4. print the before / after / retrained table with the time of each step.

Run it with ``python -m monai_unlearn.apps.demo`` (``--help`` for options). Everything goes under ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from monai_unlearn.metrics.headline import format_table

__all__ = ["main", "run_demo"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE_BUNDLE = os.path.join(REPO_ROOT, "bundles", "slice_classifier")
UNLEARN_OVERLAY = os.path.join(REPO_ROOT, "bundles", "unlearn", "configs", "unlearn.json")
DEFAULT_DEVICE = "invesalius_cranium"


def _run(cmd: list[str], what: str) -> float:
    """Run a command, echoing it, and return its wall time; stop with its output when it fails."""
    print(f"\n$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-6000:])
        raise SystemExit(f"{what} failed (exit code {proc.returncode}).")
    print(f"  {what}: done in {elapsed:.1f} s", flush=True)
    return elapsed


def _train(bundle: str, dataset_dir: str, epochs: int, extra: list[str], what: str) -> float | None:
    """Train a copy of the example bundle unless its weights exist; returns the time, or None when reused."""
    if os.path.isfile(os.path.join(bundle, "models", "model.pt")):
        print(f"\nreusing {bundle}/models/model.pt ({what}); delete it to train again", flush=True)
        return None
    if os.path.isdir(bundle):
        shutil.rmtree(bundle)
    shutil.copytree(EXAMPLE_BUNDLE, bundle, ignore=shutil.ignore_patterns("data", "models", "eval"))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"{bundle}/configs/train.json",
           "--bundle_root", bundle, "--dataset_dir", dataset_dir, "--epochs", str(epochs), *extra]
    return _run(cmd, what)


def run_demo(workdir: str, device: str = DEFAULT_DEVICE, epochs: int = 20, unlearn_args: list[str] | None = None) -> dict:
    """Train, retrain without ``device``, unlearn ``device``, and return the report with the step times.

    Args:
        workdir: folder for the data, the trained bundles and the unlearned bundle.
        device: the datalist ``device`` value to forget.
        epochs: training epochs of the original and the retrained bundle.
        unlearn_args: extra ``--key value`` overrides for the unlearn command.

    Returns:
        the unlearned bundle's report, with ``times`` (seconds of each step).
    """
    workdir = os.path.abspath(workdir)
    dataset_dir = os.path.join(workdir, "data")
    original = os.path.join(workdir, "original")
    retrained = os.path.join(workdir, "retrained")
    unlearned = os.path.join(workdir, "unlearned")
    os.makedirs(workdir, exist_ok=True)

    times: dict[str, float | None] = {}
    times["train"] = _train(original, dataset_dir, epochs, [], "training the original bundle")
    keep = f"$[d for d in @datalist_split[0] if d['device'] != '{device}']"
    times["retrain"] = _train(retrained, dataset_dir, epochs, ["--train_datalist", keep],
                              f"retraining without device {device!r}")
    if os.path.isdir(unlearned):
        shutil.rmtree(unlearned)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "unlearn",
           "--config_file", f"['{original}/configs/train.json', '{UNLEARN_OVERLAY}']",
           "--meta_file", f"{original}/configs/metadata.json", "--bundle_root", original,
           "--dataset_dir", dataset_dir, "--forget", f"device={device}", "--output_dir", unlearned,
           "--unlearn_retrained_ckpt", f"{retrained}/models/model.pt",
           "--unlearn_reason", f"scanner {device} retired", "--unlearn_progress", "false", *(unlearn_args or [])]
    times["unlearn_command"] = _run(cmd, f"unlearning device {device!r}")
    with open(os.path.join(unlearned, "unlearning", "report.json")) as f:
        report = json.load(f)
    report["times"] = times
    return report


def _row(evaluation: dict) -> dict[str, float | None]:
    mia = evaluation.get("mia")
    return {
        "forget_acc": evaluation["forget"]["accuracy"],
        "remain_acc": evaluation["remain"]["accuracy"] if evaluation.get("remain") else None,
        "test_acc": evaluation["test"]["accuracy"] if evaluation.get("test") else None,
        "mia": mia["mean"] if mia else None,
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point of the demo."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.path.join(REPO_ROOT, "runs", "demo"))
    parser.add_argument("--device", default=DEFAULT_DEVICE, help="datalist device to forget")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (original and retrained)")
    args, unlearn_args = parser.parse_known_args(argv)
    start = time.perf_counter()
    report = run_demo(args.workdir, args.device, args.epochs, unlearn_args)
    rows = {"original": _row(report["before"]), "unlearned": _row(report["after"])}
    if report.get("retrained"):
        rows["retrained"] = _row(report["retrained"])
    times = report["times"]
    print(f"\nForgot device {args.device!r}: {report['num_forgotten']} training slices; {report['num_remain']} kept.")
    print("Accuracy on the forgotten slices, the kept training slices and held-out test slices; MIA is the")
    print("membership-inference attack accuracy on forget vs test losses (0.5: cannot tell them apart).\n")
    print(format_table(rows))
    fmt = lambda t: "reused" if t is None else f"{t:.1f} s"  # noqa: E731
    print(f"\ntime: training {fmt(times['train'])}, retraining {fmt(times['retrain'])}, "
          f"unlearning {report['time_s']:.1f} s ({fmt(times['unlearn_command'])} for the whole command)")
    print(f"new bundle: {os.path.join(os.path.abspath(args.workdir), 'unlearned')} "
          f"(report and audit in unlearning/); demo total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
