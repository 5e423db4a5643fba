"""The example bundle ``bundles/slice_classifier``: train it briefly on a copy, load its weights, run inference.

The bundle's data are built from the volumes that ``scripts/install_data.sh`` installs; a missing source fails
the test with its install command. Training and inference run in a child process (as
``python -m monai.bundle run`` would) so the bundle's ``logging.conf`` and ``set_determinism`` do not touch
this process.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import torch
from monai.bundle import ConfigParser

from monai_unlearn.apps import VOLUME_SLICE_CLASSES

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE = os.path.join(REPO_ROOT, "bundles", "slice_classifier")
GENERATED = ("data", "eval", "models")  # written by the bundle's own runs, gitignored

# runs monai.bundle's functions given as JSON: [[function name, kwargs], ...]
_RUNNER = """
import json, sys
import monai.bundle
for name, kwargs in json.loads(sys.argv[1]):
    getattr(monai.bundle, name)(**kwargs)
"""


def _snapshot(root: str) -> dict[str, tuple[int, int, str]]:
    """Size, modification time and (for the shipped files) content hash of every file under ``root``."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            st = os.stat(path)
            digest = ""
            if rel.split(os.sep)[0] not in GENERATED:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            out[rel] = (st.st_size, st.st_mtime_ns, digest)
    return out


def _run_bundle(calls: list, timeout: int = 240) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, json.dumps(calls)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"bundle run failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")


class TestSliceClassifierBundle(unittest.TestCase):
    """Trains a copy for 2 epochs, then checks the checkpoint, inference and TorchScript export."""

    @classmethod
    def setUpClass(cls):
        cls.before = _snapshot(BUNDLE)
        cls._tmp = tempfile.TemporaryDirectory()
        tmp = cls._tmp.name
        cls.root = os.path.join(tmp, "slice_classifier")
        shutil.copytree(BUNDLE, cls.root, ignore=shutil.ignore_patterns(*GENERATED, "__pycache__"))
        cls.data_dir = os.path.join(tmp, "data")
        cls.configs = os.path.join(cls.root, "configs")
        _run_bundle(
            [
                [
                    "run",
                    {
                        "config_file": os.path.join(cls.configs, "train.json"),
                        "bundle_root": cls.root,
                        "dataset_dir": cls.data_dir,
                        "epochs": 2,
                    },
                ]
            ]
        )
        with open(os.path.join(cls.data_dir, "datalist.json")) as f:
            stored = json.load(f)
        cls.datalist = [{**e, "image": os.path.join(cls.data_dir, e["image"])} for e in stored["data"]]

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def test_checkpoint_loads_and_predicts(self):
        ckpt = os.path.join(self.root, "models", "model.pt")
        self.assertTrue(os.path.isfile(ckpt))
        parser = ConfigParser()
        parser.read_config(os.path.join(self.configs, "train.json"))
        parser["bundle_root"] = self.root
        parser["dataset_dir"] = self.data_dir
        net = parser.get_parsed_content("network_def")
        net.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
        net.eval()
        preprocessing = parser.get_parsed_content("validate#preprocessing")
        item = preprocessing(dict(self.datalist[0]))
        self.assertEqual(tuple(item["image"].shape), (1, 64, 64))
        with torch.no_grad():
            logits = net(item["image"][None].as_tensor())
        self.assertEqual(tuple(logits.shape), (1, len(VOLUME_SLICE_CLASSES)))
        self.assertTrue(torch.isfinite(logits).all())
        self.assertEqual(item["label"].dtype, torch.long)

    def test_split_is_held_out(self):
        parser = ConfigParser()
        parser.read_config(os.path.join(self.configs, "train.json"))
        parser["bundle_root"] = self.root
        parser["dataset_dir"] = self.data_dir
        train = {e["image"] for e in parser.get_parsed_content("train_datalist")}
        val = {e["image"] for e in parser.get_parsed_content("val_datalist")}
        self.assertFalse(train & val)
        self.assertEqual(len(train) + len(val), len(self.datalist))
        self.assertEqual(parser.get_parsed_content("num_classes"), len(VOLUME_SLICE_CLASSES))

    def test_inference_and_export(self):
        out_dir = os.path.join(self._tmp.name, "inference")
        ts_file = os.path.join(self._tmp.name, "model.ts")
        images = [self.datalist[0]["image"], self.datalist[-1]["image"]]
        inference = os.path.join(self.configs, "inference.json")
        _run_bundle(
            [
                [
                    "run",
                    {
                        "config_file": inference,
                        "bundle_root": self.root,
                        "datalist": [{"image": p} for p in images],
                        "output_dir": out_dir,
                    },
                ],
                [
                    "ckpt_export",
                    {
                        "net_id": "network_def",
                        "filepath": ts_file,
                        "ckpt_file": os.path.join(self.root, "models", "model.pt"),
                        "meta_file": os.path.join(self.configs, "metadata.json"),
                        "config_file": inference,
                        "bundle_root": self.root,
                    },
                ],
            ]
        )
        with open(os.path.join(out_dir, "predictions.csv")) as f:
            rows = list(csv.reader(f))
        self.assertEqual(sorted(r[0] for r in rows), sorted(images))
        for row in rows:
            probs = [float(v) for v in row[1:]]
            self.assertEqual(len(probs), len(VOLUME_SLICE_CLASSES))
            self.assertAlmostEqual(sum(probs), 1.0, places=4)
        scripted = torch.jit.load(ts_file)
        self.assertEqual(tuple(scripted(torch.rand(2, 1, 64, 64)).shape), (2, len(VOLUME_SLICE_CLASSES)))

    def test_metadata_matches_network(self):
        with open(os.path.join(self.configs, "metadata.json")) as f:
            meta = json.load(f)
        outputs = meta["network_data_format"]["outputs"]["pred"]
        self.assertEqual(outputs["num_channels"], len(VOLUME_SLICE_CLASSES))
        self.assertEqual([outputs["channel_def"][str(i)] for i in range(4)], list(VOLUME_SLICE_CLASSES))
        self.assertEqual(meta["network_data_format"]["inputs"]["image"]["spatial_shape"], [64, 64])

    def test_repo_bundle_unchanged(self):
        self.assertEqual(_snapshot(BUNDLE), self.before)


if __name__ == "__main__":
    unittest.main()
