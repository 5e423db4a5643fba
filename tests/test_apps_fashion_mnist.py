from __future__ import annotations

import gzip
import os
import struct
import tempfile
import unittest

import numpy as np
import torch
from parameterized import parameterized

from monai_unlearn.apps import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    fashion_mnist_dataset,
    load_fashion_mnist,
    read_idx,
)


def _write_idx(path: str, array: np.ndarray, type_code: int = 0x08, compress: bool = True, cut: int = 0) -> None:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if cut:
        payload = payload[:-cut]
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)


class TestReadIdx(unittest.TestCase):
    @parameterized.expand([(True,), (False,)])
    def test_round_trip(self, compress):
        arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "x-idx3-ubyte" + (".gz" if compress else ""))
            _write_idx(path, arr, compress=compress)
            out = read_idx(path)
        np.testing.assert_array_equal(out, arr)
        self.assertEqual(out.dtype, np.uint8)

    def test_int32_big_endian(self):
        arr = np.array([1, -2, 70000], dtype=np.int32)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "x.gz")
            _write_idx(path, arr, type_code=0x0C)
            np.testing.assert_array_equal(read_idx(path), arr)

    def test_truncated_payload(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "train-images-idx3-ubyte.gz")
            _write_idx(path, np.zeros((3, 28, 28), np.uint8), cut=10)
            with self.assertRaisesRegex(ValueError, "truncated or corrupt"):
                read_idx(path)

    def test_truncated_gzip_stream(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "train-images-idx3-ubyte.gz")
            _write_idx(path, np.zeros((50, 28, 28), np.uint8))
            with open(path, "rb") as f:
                data = f.read()
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
            with self.assertRaisesRegex(ValueError, "truncated or corrupt"):
                read_idx(path)

    def test_bad_magic(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bad")
            with open(path, "wb") as f:
                f.write(b"\x1f\x00\x08\x01" + struct.pack(">I", 2) + b"\x00\x01")
            with self.assertRaisesRegex(ValueError, "magic number"):
                read_idx(path)

    def test_corrupt_split_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            _write_idx(os.path.join(tmp, "t10k-images-idx3-ubyte.gz"), np.zeros((4, 28, 28), np.uint8))
            _write_idx(os.path.join(tmp, "t10k-labels-idx1-ubyte.gz"), np.zeros(4, np.uint8), cut=1)
            with self.assertRaisesRegex(ValueError, "truncated or corrupt"):
                load_fashion_mnist("test", root=tmp)
            _write_idx(os.path.join(tmp, "t10k-labels-idx1-ubyte.gz"), np.zeros(3, np.uint8))
            with self.assertRaisesRegex(ValueError, "4 images but"):
                load_fashion_mnist("test", root=tmp)

    def test_small_fake_split(self):
        with tempfile.TemporaryDirectory() as tmp:
            images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
            labels = np.array([0, 9, 3, 3, 1], dtype=np.uint8)
            _write_idx(os.path.join(tmp, "train-images-idx3-ubyte"), images, compress=False)
            _write_idx(os.path.join(tmp, "train-labels-idx1-ubyte.gz"), labels)
            x, y = load_fashion_mnist("train", root=tmp)
            np.testing.assert_array_equal(x, images)
            np.testing.assert_array_equal(y, labels)
            self.assertEqual(y.dtype, np.int64)
            ds = fashion_mnist_dataset("train", root=tmp)
            img, lab = ds[1]
            self.assertEqual(tuple(img.shape), (1, 28, 28))
            self.assertTrue(torch.allclose(img, torch.from_numpy(images[1]).float()[None] / 255.0))
            self.assertEqual(int(lab), 9)

    def test_missing_files_message(self):
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(FileNotFoundError, "apt-get install -y dataset-fashion-mnist"):
                load_fashion_mnist("train", root=tmp)

    def test_bad_split(self):
        with self.assertRaises(ValueError):
            load_fashion_mnist("val")


class TestFashionMNISTInstalled(unittest.TestCase):
    """Uses the Debian package (installed by scripts/install_data.sh); fails with the install command if absent."""

    @parameterized.expand([("train", 60000), ("test", 10000)])
    def test_split(self, split, size):
        images, labels = load_fashion_mnist(split, FASHION_MNIST_DIR)
        self.assertEqual(images.shape, (size, 28, 28))
        self.assertEqual(images.dtype, np.uint8)
        self.assertEqual(labels.shape, (size,))
        self.assertEqual(labels.dtype, np.int64)
        self.assertEqual(labels.min(), 0)
        self.assertEqual(labels.max(), len(FASHION_MNIST_CLASSES) - 1)
        # the release is balanced: every class holds a tenth of each split
        np.testing.assert_array_equal(np.bincount(labels), np.full(10, size // 10))
        self.assertGreater(images.mean(), 50)

    def test_dataset(self):
        ds = fashion_mnist_dataset("test", limit=100)
        self.assertEqual(len(ds), 100)
        x, y = ds.tensors
        self.assertEqual(tuple(x.shape), (100, 1, 28, 28))
        self.assertEqual(x.dtype, torch.float32)
        self.assertEqual(y.dtype, torch.int64)
        self.assertGreaterEqual(float(x.min()), 0.0)
        self.assertLessEqual(float(x.max()), 1.0)


if __name__ == "__main__":
    unittest.main()
