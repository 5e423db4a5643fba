"""Fingerprints of unlearning runs (weights hash, per-pass history, headline numbers), to check that a change of the
loop leaves results as they were: run it at two commits and compare the JSON files.

    git worktree add /tmp/before <commit> && (cd /tmp/before && python benchmarks/loop_equivalence.py --out /tmp/a.json)
    python benchmarks/loop_equivalence.py --out /tmp/b.json && python benchmarks/loop_equivalence.py --compare /tmp/a.json /tmp/b.json

Cases: ``unlearn()`` on scikit-learn's digits (fixed passes; a forget-accuracy stop after one pass and after
several; soft targets without the remain term), a checkpointed run, 2D segmentation (a class voxel by voxel, whole
cases), and the bundle command on the test fixtures (JSON zoo layout by class and by device with a stop, YAML template
layout, a segmentation bundle by class and by device with random patches). About 20 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _sha(state: dict) -> str:
    digest = hashlib.sha256()
    for key, value in state.items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _round(rows):
    return [{k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def _headline(evaluation):
    try:
        from monai_unlearn.metrics.headline import headline_rows
    except ImportError:  # releases before the one loop kept it in the runner
        from monai_unlearn.runner import headline_rows

    return None if evaluation is None else {k: None if v is None else round(v, 6)
                                            for k, v in headline_rows(evaluation).items()}


def api_cases() -> dict:
    from monai_unlearn import PSGConfig, unlearn
    from tests.segmentation_fixtures import tiny_unet, toy_volumes
    from tests.test_resume import run as resume_run
    from tests.test_runner import DigitsCase

    DigitsCase.setUpClass()
    d, out = DigitsCase, {}
    psg = PSGConfig(eps=0.3, value_range=(0.0, 1.0), phi=4.0, seed=0)
    cases = {
        "digits_phi4": dict(epochs=6),
        "digits_stop": dict(epochs=10, stop_at_forget_accuracy=0.5),
        "digits_stop_late": dict(epochs=6, lr=0.0002, stop_at_forget_accuracy=0.02),
        "digits_phi0_soft": dict(epochs=3, config=PSGConfig(eps=0.3, num_steps=3, gamma=0.5, lam=0.1, target="soft",
                                                            phi=0.0, seed=1)),
    }
    for name, kw in cases.items():
        config = kw.pop("config", psg)
        torch.manual_seed(0)
        revised, result = unlearn(d.original, d.forget_loader, d.remain_loader, config=config, **{"lr": 0.001, **kw},
                                  test_loader=d.test_loader, retrained_model=d.retrained, num_classes=10, progress=False,
                                  regime="fixed")
        out[name] = {"weights": _sha(revised.state_dict()), "epochs": result.epochs, "history": _round(result.history),
                     "after": _headline(result.after), "retrained": _headline(result.retrained)}
    with tempfile.TemporaryDirectory() as folder:
        model, result = resume_run(checkpoint_dir=folder)
        out["checkpointed"] = {"weights": _sha(model.state_dict()), "history": _round(result.history)}
    x, y = toy_volumes(4, 16, 2, seed=0)
    torch.manual_seed(0)
    net = tiny_unet(2)
    data = [(x[i:i + 2], y[i:i + 2]) for i in range(0, 4, 2)]
    config = PSGConfig(eps=0.3, phi=1.0, seed=0)
    revised, result = unlearn(net, data, data, config=config, epochs=2, task="segmentation", forget_classes=[2],
                              progress=False, regime="fixed")
    out["segmentation_class"] = {"weights": _sha(revised.state_dict()), "history": _round(result.history),
                                 "after": _headline(result.after)}
    revised, result = unlearn(net, data[:1], data[1:], config=config, epochs=2, task="segmentation", progress=False,
                              regime="fixed")
    out["segmentation_cases"] = {"weights": _sha(revised.state_dict()), "after": _headline(result.after)}
    return out


def bundle_cases() -> dict:
    from monai_unlearn.bundle import unlearn_from_parser
    from tests.bundle_fixtures import make_images, overlay_parser, write_json_zoo_bundle, write_yaml_template_bundle
    from tests.test_bundle_unlearn_segmentation import make_volumes, write_segmentation_bundle

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        items = make_images(os.path.join(tmp, "data"))
        zoo = write_json_zoo_bundle(os.path.join(tmp, "zoo"), items)
        template = write_yaml_template_bundle(os.path.join(tmp, "template"), items)
        seg = write_segmentation_bundle(os.path.join(tmp, "seg"), make_volumes(os.path.join(tmp, "segdata")))
        runs = {
            "zoo_label2": (zoo, "train.json", dict(forget="label=2")),
            "zoo_device_stop": (zoo, "train.json", dict(forget="device=scanner_c", unlearn_epochs=5,
                                                        unlearn_stop_at_forget_accuracy=0.3)),
            "template_device": (template, "train.yaml", dict(forget="device=scanner_c", unlearn_lr=0.003,
                                                             unlearn_epochs=6)),
            "segmentation_label2": (seg, "train.json", dict(forget="label=2", unlearn_epochs=3, unlearn_batch_size=2,
                                                            unlearn_lr=0.01)),
            "segmentation_device_patches": (seg, "train.json", dict(forget="device=scanner_b", unlearn_epochs=3,
                                                                    unlearn_batch_size=2, unlearn_patch_size=[8, 8, 8])),
        }
        for name, (bundle, config, kw) in runs.items():
            target = os.path.join(tmp, "out", name)
            unlearn_from_parser(overlay_parser(bundle, config, output_dir=target, **kw))
            report = json.load(open(os.path.join(target, "unlearning", "report.json")))
            weights = torch.load(os.path.join(target, "models", "model.pt"), weights_only=True)
            out[name] = {"weights": _sha(weights), "epochs": report["epochs"], "history": _round(report["history"]),
                         "before": _headline(report["before"]), "after": _headline(report["after"])}
    return out


def compare(first: str, second: str) -> int:
    a, b = json.load(open(first)), json.load(open(second))
    differ = [k for k in a if a[k] != b.get(k)]
    for key in a:
        print(f"{key}: {'equal' if key not in differ else 'DIFFERENT'}")
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the fingerprints here (JSON)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two fingerprint files")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    torch.set_num_threads(1)
    record = {**api_cases(), **bundle_cases()}
    text = json.dumps(record, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
