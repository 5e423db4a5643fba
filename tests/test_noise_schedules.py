from __future__ import annotations

import math
import unittest

import torch
from parameterized import parameterized

from monai_unlearn.core import lambda_at, sample_noise, step_size_at


class TestSampleNoise(unittest.TestCase):
    @parameterized.expand([("normal",), ("laplace",), ("cauchy",), ("uniform",)])
    def test_shape_dtype_and_seed(self, dist):
        like = torch.zeros(4, 1, 8, 8, dtype=torch.float64)
        a = sample_noise(like, dist, torch.Generator().manual_seed(3))
        b = sample_noise(like, dist, torch.Generator().manual_seed(3))
        c = sample_noise(like, dist, torch.Generator().manual_seed(4))
        self.assertEqual(a.shape, like.shape)
        self.assertEqual(a.dtype, torch.float64)
        self.assertTrue(torch.equal(a, b))
        self.assertFalse(torch.equal(a, c))
        self.assertTrue(torch.isfinite(a).all())

    def test_moments(self):
        like = torch.zeros(200_000)
        g = torch.Generator().manual_seed(0)
        normal = sample_noise(like, "normal", g)
        self.assertAlmostEqual(normal.std().item(), 1.0, delta=0.02)
        uniform = sample_noise(like, "uniform", g)
        self.assertGreaterEqual(uniform.min().item(), -1.0)
        self.assertLessEqual(uniform.max().item(), 1.0)
        self.assertAlmostEqual(uniform.var().item(), 1 / 3, delta=0.01)
        laplace = sample_noise(like, "laplace", g)  # scale 1: variance 2, mean |x| 1
        self.assertAlmostEqual(laplace.abs().mean().item(), 1.0, delta=0.02)
        self.assertAlmostEqual(laplace.mean().item(), 0.0, delta=0.02)
        cauchy = sample_noise(like, "cauchy", g)  # scale 1: median |x| is 1
        self.assertAlmostEqual(cauchy.abs().median().item(), 1.0, delta=0.03)

    def test_unknown(self):
        with self.assertRaisesRegex(ValueError, "gumbel"):
            sample_noise(torch.zeros(2), "gumbel")


class TestSchedules(unittest.TestCase):
    def test_step_size(self):
        self.assertEqual(step_size_at(0.2, 5, "constant"), 0.2)
        self.assertAlmostEqual(step_size_at(0.2, 4, "sqrt"), 0.1)
        with self.assertRaisesRegex(ValueError, "starts at 1"):
            step_size_at(0.2, 0)
        with self.assertRaisesRegex(ValueError, "unknown step schedule"):
            step_size_at(0.2, 1, "cosine")

    def test_lambda(self):
        self.assertEqual(lambda_at(1.0, 3, 10, "none"), 1.0)
        self.assertAlmostEqual(lambda_at(1.0, 4, 10, "inverse"), 0.25)
        self.assertAlmostEqual(lambda_at(2.0, 10, 10, "exponential", 0.1), 2.0 * math.exp(-1.0))
        self.assertAlmostEqual(lambda_at(1.0, 5, 10, "linear"), 0.5)
        self.assertEqual(lambda_at(1.0, 12, 10, "linear"), 0.0)
        with self.assertRaisesRegex(ValueError, "unknown lambda schedule"):
            lambda_at(1.0, 1, 10, "cyclic")


if __name__ == "__main__":
    unittest.main()
