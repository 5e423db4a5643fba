"""The unlearn bundle contract on a segmentation bundle: a tiny 3D bundle written in a temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch
from monai.bundle import ConfigParser

from monai_unlearn.bundle import unlearn_from_parser
from monai_unlearn.bundle.forget_items import is_segmentation_datalist, select_segmentation_forget
from tests.bundle_fixtures import overlay_parser
from tests.segmentation_fixtures import (
    SEG_CLASSES,
    UNLEARN_CONFIG,
    VOLUME_SIZE,
    make_volumes,
    tree_digest,
    write_segmentation_bundle,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SegmentationBundleCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        cls.tmp = tempfile.mkdtemp()
        cls.items = make_volumes(os.path.join(cls.tmp, "data"))
        cls.bundle = write_segmentation_bundle(os.path.join(cls.tmp, "seg"), cls.items)
        cls.digest = tree_digest(cls.bundle)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def parser(self, **overrides) -> ConfigParser:
        overrides.setdefault("unlearn_epochs", 3)
        overrides.setdefault("unlearn_batch_size", 2)
        return overlay_parser(self.bundle, **overrides)

    def out(self, name: str) -> str:
        return os.path.join(self.tmp, "outputs", name)


class TestSegmentationBundleContract(SegmentationBundleCase):
    def test_forget_a_label_class_from_the_command_line(self):
        out = self.out("label2")
        cmd = [
            sys.executable, "-m", "monai.bundle", "run", "unlearn",
            "--config_file", f"['{self.bundle}/configs/train.json', '{UNLEARN_CONFIG}']",
            "--meta_file", f"{self.bundle}/configs/metadata.json", "--bundle_root", self.bundle,
            "--forget", "label=2", "--output_dir", out, "--unlearn_params#eps", "0.3", "--unlearn_epochs", "8",
            "--unlearn_batch_size", "2", "--unlearn_lr", "0.01", "--unlearn_progress", "false",
        ]
        env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=self.tmp, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        for part in ("configs/train.json", "configs/inference.json", "configs/metadata.json", "models/model.pt",
                     "models/model.ts", "unlearning/report.json", "unlearning/audit.json", "unlearning/curves.png",
                     "unlearning/per_class_dice.png"):
            self.assertTrue(os.path.isfile(os.path.join(out, part)), part)
        self.assertEqual(tree_digest(self.bundle), self.digest)  # the wrapped bundle is byte-for-byte unchanged

        report = json.load(open(os.path.join(out, "unlearning", "report.json")))
        self.assertEqual(report["task"], "segmentation")
        self.assertEqual(report["forget_classes"], [2])
        before, after = report["before"]["forget"], report["after"]["forget"]
        self.assertLess(after["forgotten_dice"], before["forgotten_dice"] - 0.2)
        self.assertEqual(report["layout"]["inferer"], "validate#inferer")
        meta = json.load(open(os.path.join(out, "configs", "metadata.json")))
        self.assertEqual(meta["version"], "0.3.1")
        self.assertIn("label class(es) [2]", meta["changelog"]["0.3.1"])

        ts = torch.jit.load(os.path.join(out, "models", "model.ts"))
        volume = torch.from_numpy(np.load(self.items[0]["image"]))[None, None]
        self.assertEqual(tuple(ts(volume).shape), (1, SEG_CLASSES, VOLUME_SIZE, VOLUME_SIZE, VOLUME_SIZE))

    def test_forget_a_device_with_patches(self):
        out = self.out("device_b")
        summary = unlearn_from_parser(self.parser(forget="device=scanner_b", output_dir=out,
                                                  unlearn_patch_size=[8, 8, 8], unlearn_reason="scanner retired"))
        record = summary["record"]
        self.assertEqual(summary["num_forgotten"], 2)  # scanner_b's training cases
        self.assertIsNone(record["forget_classes"])
        self.assertIn("forget_dice", summary["table"])
        self.assertIn("remain_dice", summary["table"])
        audit = json.load(open(os.path.join(out, "unlearning", "audit.json")))
        self.assertEqual(audit["counts"]["device"], {"scanner_b": 2})
        self.assertNotIn("label", audit["counts"])  # label-map paths are never listed in clear
        self.assertNotIn(self.items[0]["label"], json.dumps(audit))
        self.assertEqual(tree_digest(self.bundle), self.digest)

    def test_forget_cases(self):
        train = [it for i, it in enumerate(self.items) if i % 3]
        cases = f"case={train[0]['case']}|{train[1]['case']}"
        summary = unlearn_from_parser(self.parser(forget=cases, output_dir=self.out("cases"), unlearn_epochs=1))
        self.assertEqual(summary["num_forgotten"], 2)
        self.assertTrue(os.path.isfile(os.path.join(self.out("cases"), "models", "model.ts")))


class TestSegmentationSelection(SegmentationBundleCase):
    def test_detection_and_selection(self):
        self.assertTrue(is_segmentation_datalist(self.items))
        self.assertFalse(is_segmentation_datalist([{"image": "a.nii.gz", "label": 2}]))
        forget, remain, classes, ignore = select_segmentation_forget(self.items, "label=1|2", SEG_CLASSES)
        self.assertEqual((classes, ignore), ([1, 2], True))
        self.assertIs(forget, remain)
        forget, remain, classes, ignore = select_segmentation_forget(self.items, "label=2,device=scanner_a")
        self.assertEqual((len(forget), len(remain), classes, ignore), (3, 6, [2], False))
        forget, _, classes, _ = select_segmentation_forget(self.items, "device=scanner_c")
        self.assertIsNone(classes)
        self.assertEqual({it["device"] for it in forget}, {"scanner_c"})

    def test_class_the_network_does_not_output(self):
        with self.assertRaisesRegex(ValueError, r"cannot forget class\(es\) \[5\].*3 classes"):
            unlearn_from_parser(self.parser(forget="label=5", output_dir=self.out("bad_class")))
        self.assertFalse(os.path.exists(self.out("bad_class")))

    def test_label_map_shape_mismatch(self):
        bad_label = os.path.join(self.tmp, "bad_label.npy")
        np.save(bad_label, np.zeros((VOLUME_SIZE - 4,) * 3, dtype=np.uint8))
        bad = [{**it, "label": bad_label} for it in self.items[:4]]
        parser = self.parser(forget="device=scanner_a", output_dir=self.out("bad_shape"))
        parser["datalist"] = {"training": bad, "validation": bad[:1]}
        with self.assertRaisesRegex(ValueError, "does not match the images"):
            unlearn_from_parser(parser)
        self.assertFalse(os.path.exists(self.out("bad_shape")))


if __name__ == "__main__":
    unittest.main()
