from __future__ import annotations

import tempfile
import unittest

import numpy as np
from parameterized import parameterized

from monai_unlearn.apps import (
    BRAIN_REGION_DEVICES,
    BRAIN_REGIONS,
    brain_region_datalist,
    build_brain_region_patches,
    read_aal_labels,
    split_train_test,
)


class TestBrainRegionPatches(unittest.TestCase):
    """Uses mricron-data and nilearn (scripts/install_data.sh); a missing source fails with its install command."""

    @classmethod
    def setUpClass(cls):
        cls.images, cls.labels, cls.devices = build_brain_region_patches(n_per_class=8, seed=0)

    def test_shapes(self):
        n = 8 * len(BRAIN_REGIONS) * len(BRAIN_REGION_DEVICES)
        self.assertEqual(self.images.shape, (n, 1, 32, 32))
        self.assertEqual(self.images.dtype, np.float32)
        self.assertEqual(self.labels.shape, (n,))
        self.assertEqual(self.labels.dtype, np.int64)
        self.assertEqual(self.devices.shape, (n,))
        self.assertGreaterEqual(float(self.images.min()), 0.0)
        self.assertLessEqual(float(self.images.max()), 1.0)

    def test_labels_and_devices(self):
        self.assertEqual(set(self.labels.tolist()), set(range(len(BRAIN_REGIONS))))
        self.assertEqual(set(self.devices.tolist()), set(BRAIN_REGION_DEVICES))
        for device in BRAIN_REGION_DEVICES:
            counts = np.bincount(self.labels[self.devices == device], minlength=len(BRAIN_REGIONS))
            np.testing.assert_array_equal(counts, np.full(len(BRAIN_REGIONS), 8))
        # patches are centred in the brain, so none is blank
        self.assertTrue((self.images.reshape(len(self.images), -1).max(axis=1) > 0.1).all())
        # the two devices look different (different scanners)
        means = [self.images[self.devices == d].mean() for d in BRAIN_REGION_DEVICES]
        self.assertGreater(abs(means[0] - means[1]), 1e-3)

    def test_reproducible(self):
        images, labels, devices = build_brain_region_patches(
            n_per_class=8, seed=0, devices=("colin27",), regions=BRAIN_REGIONS[:2], patch_size=16
        )
        self.assertEqual(images.shape, (16, 1, 16, 16))
        self.assertEqual(set(devices.tolist()), {"colin27"})
        again = build_brain_region_patches(
            n_per_class=8, seed=0, devices=("colin27",), regions=BRAIN_REGIONS[:2], patch_size=16
        )[0]
        np.testing.assert_array_equal(images, again)
        other = build_brain_region_patches(
            n_per_class=8, seed=1, devices=("colin27",), regions=BRAIN_REGIONS[:2], patch_size=16
        )[0]
        self.assertFalse(np.array_equal(images, other))

    def test_datalist_and_split(self):
        dl = brain_region_datalist(self.images, self.labels, self.devices)
        self.assertEqual(len(dl), len(self.labels))
        self.assertEqual(dl[0]["class_name"], BRAIN_REGIONS[dl[0]["label"]])
        self.assertEqual(dl[0]["image"].shape, (1, 32, 32))
        train, test = split_train_test(dl, test_fraction=0.25, seed=0)
        self.assertEqual(len(train) + len(test), len(dl))
        self.assertEqual({e["device"] for e in test}, set(BRAIN_REGION_DEVICES))

    def test_aal_labels(self):
        regions = read_aal_labels()
        self.assertEqual(regions["Hippocampus"], [37, 38])
        for name in BRAIN_REGIONS:
            self.assertIn(name, regions)

    @parameterized.expand([("regions", {"regions": ("Nowhere",)}), ("devices", {"devices": ("scanner_x",)})])
    def test_unknown(self, _, kwargs):
        with self.assertRaises(ValueError):
            build_brain_region_patches(n_per_class=1, **kwargs)

    def test_missing_message(self):
        with tempfile.TemporaryDirectory() as empty:
            with self.assertRaisesRegex(FileNotFoundError, "apt-get install -y mricron-data"):
                build_brain_region_patches(n_per_class=1, templates_dir=empty)


if __name__ == "__main__":
    unittest.main()
