"""The MNI152 tissue-segmentation slices (nilearn, offline): tissue map, datalist, cases, devices, split."""

from __future__ import annotations

import os
import shutil
import tempfile
import unittest

import nibabel as nib
import numpy as np
import torch

from monai_unlearn.apps import TISSUE_CLASSES, TISSUE_DEVICES, build_tissue_slice_datalist, split_tissue_cases, tissue_map


class TestTissueMap(unittest.TestCase):
    def test_classes(self):
        gm = np.array([0.0, 0.7, 0.2, 0.1, 0.9])
        wm = np.array([0.0, 0.2, 0.7, 0.1, 0.0])
        mask = np.array([1, 1, 1, 1, 0])
        self.assertEqual(tissue_map(gm, wm, mask).tolist(), [1, 2, 3, 1, 0])
        with self.assertRaisesRegex(ValueError, "same shape"):
            tissue_map(gm, wm[:3], mask)


class TestTissueSlices(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        cls.tmp = tempfile.mkdtemp()
        cls.items = build_tissue_slice_datalist(cls.tmp, image_size=32, slices_per_case=8)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_datalist(self):
        self.assertGreater(len(self.items), 40)
        self.assertEqual(set(self.items[0]), {"image", "label", "case", "device", "slice"})
        self.assertEqual({it["device"] for it in self.items}, set(TISSUE_DEVICES))
        for it in self.items[:: max(len(self.items) // 5, 1)]:
            image = np.asarray(nib.load(it["image"]).dataobj)
            label = np.asarray(nib.load(it["label"]).dataobj)
            self.assertEqual(image.shape, (32, 32))
            self.assertEqual(label.shape, (32, 32))
            self.assertTrue(0.0 <= image.min() and image.max() <= 1.0)
            self.assertTrue(set(np.unique(label)) <= set(range(len(TISSUE_CLASSES))))
        labels = np.stack([np.asarray(nib.load(it["label"]).dataobj) for it in self.items])
        self.assertEqual(set(np.unique(labels)), {0, 1, 2, 3})
        # whole slabs of consecutive slices form a case, and a case has one device
        for case in {it["case"] for it in self.items}:
            members = [it for it in self.items if it["case"] == case]
            self.assertLessEqual(len(members), 8)
            self.assertEqual(len({it["device"] for it in members}), 1)

    def test_reused_and_split(self):
        stamp = os.path.getmtime(self.items[0]["image"])
        again = build_tissue_slice_datalist(self.tmp, image_size=32, slices_per_case=8)
        self.assertEqual(again, self.items)
        self.assertEqual(os.path.getmtime(self.items[0]["image"]), stamp)
        train, val = split_tissue_cases(self.items, val_every=3)
        self.assertEqual(len(train) + len(val), len(self.items))
        self.assertFalse({it["case"] for it in train} & {it["case"] for it in val})
        with self.assertRaisesRegex(ValueError, "val_every"):
            split_tissue_cases(self.items, val_every=1)
        with self.assertRaisesRegex(ValueError, "image_size"):
            build_tissue_slice_datalist(self.tmp, image_size=4)


if __name__ == "__main__":
    unittest.main()
