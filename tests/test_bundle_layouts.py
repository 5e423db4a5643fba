"""Zoo data layouts that are not lists of path dicts, unlearned through the unchanged bundle command."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, NPZDictItemDataset, PersistentDataset, partition_dataset
from torch.utils.data import Subset

from monai_unlearn.bundle import unlearn_from_parser
from monai_unlearn.bundle.datalist import datalist_items, item_content_sha256
from monai_unlearn.bundle.layout import missing_package
from monai_unlearn.bundle.verify import verify_unlearned_bundle
from tests.bundle_fixtures import UNLEARN_CONFIG, overlay_parser, tree_digest
from tests.layout_fixtures import (
    write_cardiac_layout_bundle,
    write_csv_layout_bundle,
    write_nucleus_layout_bundle,
    train_with_own_config,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LayoutCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        cls.tmp = tempfile.mkdtemp()
        cls.cardiac = write_cardiac_layout_bundle(os.path.join(cls.tmp, "cardiac"))
        cls.nucleus = write_nucleus_layout_bundle(os.path.join(cls.tmp, "nucleus"))
        cls.csv = write_csv_layout_bundle(os.path.join(cls.tmp, "csv"))
        for root in (cls.cardiac, cls.nucleus, cls.csv):
            train_with_own_config(root)  # one short training with the bundle's own train.json
        cls.digests = {root: tree_digest(root) for root in (cls.cardiac, cls.nucleus, cls.csv)}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def out(self, name: str) -> str:
        return os.path.join(self.tmp, "outputs", name)

    def unlearn(self, bundle: str, name: str, **overrides) -> dict:
        overrides.setdefault("unlearn_epochs", 2)
        overrides.setdefault("unlearn_batch_size", 4)
        summary = unlearn_from_parser(overlay_parser(bundle, output_dir=self.out(name), **overrides))
        self.assertEqual(tree_digest(bundle), self.digests[bundle])  # the wrapped bundle is byte-identical
        return summary

    def assert_bundle_runs(self, out: str, image: torch.Tensor, expected_shape: tuple) -> None:
        model = torch.jit.load(os.path.join(out, "models", "model.ts"))
        with torch.no_grad():
            self.assertEqual(tuple(model(image[None]).shape), expected_shape)


class TestCardiacLayout(LayoutCase):
    def test_npz_subset_forgotten_by_position_through_the_command(self):
        out = self.out("cardiac_index")
        cmd = [sys.executable, "-m", "monai.bundle", "run", "unlearn",
               "--config_file", f"['{self.cardiac}/configs/train.json', '{UNLEARN_CONFIG}']",
               "--meta_file", f"{self.cardiac}/configs/metadata.json", "--bundle_root", self.cardiac,
               "--forget", "index=0,3", "--output_dir", out, "--unlearn_epochs", "2", "--unlearn_batch_size", "4",
               "--unlearn_progress", "false"]
        env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=self.tmp, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertEqual(tree_digest(self.cardiac), self.digests[self.cardiac])

        report = json.load(open(os.path.join(out, "unlearning", "report.json")))
        audit = json.load(open(os.path.join(out, "unlearning", "audit.json")))
        self.assertEqual(report["task"], "segmentation")
        self.assertEqual(report["training_data"], "Subset of NPZDictItemDataset")
        # the items the report names are those at positions 0 and 3 of the bundle's own training Subset
        npz = NPZDictItemDataset(os.path.join(self.cardiac, "data", "cardiac.npz"), {"images": "image", "segs": "label"})
        train = Subset(npz, partition_dataset(list(range(len(npz))), (4, 1), shuffle=True, seed=0)[0])
        expected = [{"index": i, "content_sha256": item_content_sha256(train[i])} for i in (0, 3)]
        self.assertEqual(report["forgotten_items"], expected)
        self.assertEqual([(it["index"], it["id_sha256"]) for it in audit["items"]],
                         [(e["index"], e["content_sha256"]) for e in expected])
        self.assert_bundle_runs(out, torch.as_tensor(train[0]["image"]), (1, 3, 16, 16))

    def test_label_class_forgotten_voxel_by_voxel(self):
        summary = self.unlearn(self.cardiac, "cardiac_label", forget="label=2", unlearn_epochs=3)
        record = summary["record"]
        self.assertEqual(record["forget_classes"], [2])
        self.assertLess(record["after"]["forget"]["forgotten_dice"], record["before"]["forget"]["forgotten_dice"])


class TestNucleusLayout(LayoutCase):
    def test_classes_made_by_transforms(self):
        summary = self.unlearn(self.nucleus, "nucleus_class1", forget="label=1", unlearn_epochs=3)
        record = summary["record"]
        self.assertEqual(record["task"], "classification")  # the label PNGs do not make it a segmenter
        datalist = json.load(open(os.path.join(self.nucleus, "data", "datalist.json")))["training"]
        expected = [i for i, item in enumerate(datalist) if item["mask_value"] == 2]  # class = mask_value - 1
        self.assertEqual([it["index"] for it in record["forgotten_items"]], expected)
        audit = json.load(open(os.path.join(self.out("nucleus_class1"), "unlearning", "audit.json")))
        self.assertEqual(audit["counts"]["label"], {"1": len(expected)})
        self.assertTrue(all(len(it["content_sha256"]) == 64 for it in audit["items"]))  # the image files' hashes
        self.assertLess(record["after"]["forget"]["accuracy"], record["before"]["forget"]["accuracy"])
        self.assert_bundle_runs(self.out("nucleus_class1"), torch.rand(4, 16, 16), (1, 3))
        outcome = verify_unlearned_bundle(self.out("nucleus_class1"))
        self.assertTrue(outcome["ok"], outcome["checks"])

    def test_a_task_that_does_not_fit_the_network(self):
        with self.assertRaisesRegex(ValueError, r"unlearn_task is 'segmentation', but the network outputs shape \(1, 3\)"):
            self.unlearn(self.nucleus, "nucleus_wrong_task", forget="label=1", unlearn_task="segmentation")


class TestCsvLayout(LayoutCase):
    def test_datalist_from_a_csv_expression(self):
        summary = self.unlearn(self.csv, "csv_device", forget="device=scanner_b")
        self.assertEqual(summary["num_forgotten"], 12)  # 3 classes x 4 training cases of scanner_b
        self.assertEqual(summary["record"]["training_data"], "list")
        self.assert_bundle_runs(self.out("csv_device"), torch.rand(1, 16, 16), (1, 3))

    def test_training_data_without_dict_items(self):
        with self.assertRaisesRegex(ValueError, r"'network_def#channels' \(list\) does not yield dict items: item 0 is "
                                                r"a int; name the config id .*--unlearn_keys#datalist"):
            self.unlearn(self.csv, "csv_rows", forget="label=1", **{"unlearn_keys#datalist": "network_def#channels"})

    def test_a_missing_package_is_named_before_any_work(self):
        transforms = [{"_target_": "monai_unlearn_missing_pkg.transforms.Denoised", "keys": "image"}]
        with self.assertRaisesRegex(ModuleNotFoundError, r"preprocessing \(config id 'preprocessing'\) needs the "
                                                         r"package 'monai_unlearn_missing_pkg'"):
            self.unlearn(self.csv, "csv_missing", forget="label=1",
                         preprocessing={"_target_": "Compose", "transforms": transforms})
        self.assertFalse(os.path.exists(self.out("csv_missing")))


class TestDatalistItems(unittest.TestCase):
    def setUp(self):
        self.items = [{"image": np.full((1, 2, 2), i, np.float32), "label": i % 2} for i in range(6)]

    def test_collections_of_dict_items(self):
        double = lambda d: {**d, "image": d["image"] * 2}  # noqa: E731
        self.assertFalse(datalist_items(self.items, "x").transformed)
        # a MONAI Dataset and a Subset of one give their raw items: the preprocessing is applied once, later
        raw = datalist_items(Subset(Dataset(self.items, double), [4, 1]), "x")
        self.assertEqual([float(it["image"].max()) for it in raw.items], [4.0, 1.0])
        self.assertEqual((raw.transformed, raw.source), (False, "Subset of Dataset"))
        with tempfile.TemporaryDirectory() as cache:
            for dataset in (CacheDataset(self.items, double, progress=False), PersistentDataset(self.items, double, cache)):
                got = datalist_items(dataset, "x")
                self.assertEqual([float(it["image"].max()) for it in got.items], list(range(6)))
                self.assertFalse(got.transformed)

        class Transforming:  # indexable, applies its own transform: taken as it yields, marked transformed
            transform = staticmethod(double)

            def __len__(self):
                return 3

            def __getitem__(self, i):
                return double({"image": np.ones(2) * i})

        ready = datalist_items(Transforming(), "x")
        self.assertTrue(ready.transformed)
        self.assertEqual(float(ready.items[2]["image"][0]), 4.0)

    def test_npz_dataset_with_its_own_transform(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "d.npz")
            np.savez(path, images=np.zeros((3, 1, 2, 2)), segs=np.ones((3, 1, 2, 2)))
            plain = datalist_items(NPZDictItemDataset(path, {"images": "image", "segs": "label"}), "npz")
            self.assertFalse(plain.transformed)
            transformed = datalist_items(NPZDictItemDataset(path, {"images": "image", "segs": "label"},
                                                            transform=lambda d: d), "npz")
            self.assertTrue(transformed.transformed)
            self.assertEqual(len(transformed.items), 3)

    def test_errors_name_what_was_found(self):
        with self.assertRaisesRegex(ValueError, r"'x' is a int, which has no items.*--unlearn_keys#datalist"):
            datalist_items(3, "x")
        with self.assertRaisesRegex(ValueError, r"item 1 is a str"):
            datalist_items([{"image": 1}, "a"], "x")

    def test_content_hash(self):
        first = item_content_sha256(self.items[0])
        self.assertEqual(first, item_content_sha256({k: v.copy() if hasattr(v, "copy") else v
                                                     for k, v in self.items[0].items()}))
        self.assertNotEqual(first, item_content_sha256(self.items[2]))  # same label, other pixels
        as_tensor = {"image": torch.as_tensor(self.items[0]["image"]), "label": 0}
        self.assertEqual(first, item_content_sha256(as_tensor))

    @unittest.skipIf(importlib.util.find_spec("skimage") is not None, "scikit-image is installed here")
    def test_pip_name_of_a_missing_package(self):
        try:
            import skimage  # noqa: F401  (absent here: its error is what is tested)
        except ModuleNotFoundError as error:
            self.assertEqual(missing_package(RuntimeError("Failed to instantiate")), None)
            wrapped = RuntimeError("Failed to instantiate component")
            wrapped.__cause__ = error
            self.assertEqual(missing_package(wrapped), "scikit-image")


if __name__ == "__main__":
    unittest.main()
