from __future__ import annotations

import gzip
import os
import tempfile
import unittest

import numpy as np
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from parameterized import parameterized

from monai_unlearn.apps import (
    VOLUME_SLICE_CLASSES,
    VOLUME_SOURCES,
    build_volume_slice_datalist,
    datalist_counts,
    read_nrrd,
    sources_available,
    split_train_test,
)

SLICES = 4


class TestVolumeSliceDatalist(unittest.TestCase):
    """Builds the datalist from the installed sources (scripts/install_data.sh); a missing source fails the test
    with its install command."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.out = cls._tmp.name
        cls.datalist = build_volume_slice_datalist(cls.out, image_size=64, slices_per_volume=SLICES, seed=0)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def test_entries(self):
        self.assertEqual(len(self.datalist), SLICES * len(VOLUME_SOURCES))
        keys = {"image", "label", "class_name", "device", "source", "slice"}
        for e in self.datalist:
            self.assertEqual(set(e), keys)
            self.assertTrue(os.path.isfile(e["image"]), e["image"])
            self.assertIn(e["label"], range(len(VOLUME_SLICE_CLASSES)))
            self.assertEqual(VOLUME_SLICE_CLASSES[e["label"]], e["class_name"])
        self.assertTrue(os.path.isfile(os.path.join(self.out, "datalist.json")))
        # every class is present and each device holds exactly one class
        self.assertEqual({e["label"] for e in self.datalist}, set(range(len(VOLUME_SLICE_CLASSES))))
        by_device = {}
        for e in self.datalist:
            by_device.setdefault(e["device"], set()).add(e["label"])
        self.assertEqual(set(by_device), {s.name for s in VOLUME_SOURCES})
        self.assertTrue(all(len(v) == 1 for v in by_device.values()))
        counts = datalist_counts(self.datalist)
        self.assertEqual(sum(counts["device"].values()), len(self.datalist))
        self.assertEqual(counts["class"]["head_ct"], SLICES)

    def test_load_with_monai(self):
        loader = Compose([LoadImaged("image"), EnsureChannelFirstd("image")])
        for e in self.datalist[:: SLICES]:
            img = loader(dict(e))["image"]
            self.assertEqual(tuple(img.shape), (1, 64, 64))
            self.assertGreaterEqual(float(img.min()), 0.0)
            self.assertLessEqual(float(img.max()), 1.0)
            self.assertGreater(float(img.mean()), 0.02)  # informative slices, not empty ones

    def test_idempotent(self):
        mtimes = {e["image"]: os.path.getmtime(e["image"]) for e in self.datalist}
        again = build_volume_slice_datalist(self.out, image_size=64, slices_per_volume=SLICES, seed=0)
        self.assertEqual(again, self.datalist)
        self.assertEqual({e["image"]: os.path.getmtime(e["image"]) for e in again}, mtimes)

    def test_subset_and_size(self):
        with tempfile.TemporaryDirectory() as tmp:
            dl = build_volume_slice_datalist(tmp, image_size=32, slices_per_volume=3, sources=["colin27"])
            self.assertEqual(len(dl), 3)
            self.assertEqual({e["device"] for e in dl}, {"colin27"})
            img = LoadImaged("image")(dict(dl[0]))["image"]
            self.assertEqual(tuple(img.shape), (32, 32))

    @parameterized.expand([(0.25, 0), (0.5, 3)])
    def test_split(self, fraction, seed):
        train, test = split_train_test(self.datalist, test_fraction=fraction, seed=seed)
        ids = lambda dl: {e["image"] for e in dl}  # noqa: E731
        self.assertFalse(ids(train) & ids(test))
        self.assertEqual(ids(train) | ids(test), ids(self.datalist))
        # held-out slices of the same devices
        self.assertEqual({e["device"] for e in train}, {e["device"] for e in test})
        for device in {e["device"] for e in self.datalist}:
            n_test = sum(e["device"] == device for e in test)
            self.assertEqual(n_test, max(1, round(fraction * SLICES)))
        # reproducible and independent of list order
        train2, test2 = split_train_test(list(reversed(self.datalist)), test_fraction=fraction, seed=seed)
        self.assertEqual(ids(test2), ids(test))

    def test_split_bad_fraction(self):
        with self.assertRaises(ValueError):
            split_train_test(self.datalist, test_fraction=1.0)


class TestMissingSources(unittest.TestCase):
    @parameterized.expand(
        [
            ("mricron", "colin27", "apt-get install -y mricron-data"),
            ("itk_examples", "itk_kmeans_t1", "apt-get install -y insighttoolkit5-examples"),
            ("invesalius", "invesalius_cranium", "apt-get install -y invesalius-examples"),
            ("pyradiomics", "pyradiomics_lung1", "scripts/install_data.sh"),
        ]
    )
    def test_message(self, group, source, install):
        with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as out:
            report = sources_available({group: empty})
            self.assertFalse(report[source]["available"])
            self.assertIn(install, report[source]["install"])
            with self.assertRaises(FileNotFoundError) as ctx:
                build_volume_slice_datalist(out, sources=[source], data_dirs={group: empty})
            self.assertIn(install, str(ctx.exception))
            self.assertIn(source, str(ctx.exception))

    def test_unknown(self):
        with tempfile.TemporaryDirectory() as out:
            with self.assertRaises(ValueError):
                build_volume_slice_datalist(out, sources=["nope"])
            with self.assertRaises(ValueError):
                sources_available({"nope": out})


class TestReadNrrd(unittest.TestCase):
    def test_gzip_lps(self):
        arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
        header = (
            "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 2 3 4\n"
            "space directions: (0.5,0,0) (0,0.5,0) (0,0,2)\nendian: little\nencoding: gzip\n"
            "space origin: (1,2,3)\n\n"
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "x.nrrd")
            with open(path, "wb") as f:
                f.write(header.encode() + gzip.compress(arr.T.astype("<i2").tobytes()))
            out, affine = read_nrrd(path)
        np.testing.assert_array_equal(out, arr)
        np.testing.assert_allclose(np.diag(affine), [-0.5, -0.5, 2, 1])
        np.testing.assert_allclose(affine[:3, 3], [-1, -2, 3])


if __name__ == "__main__":
    unittest.main()
