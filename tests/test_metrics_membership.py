from __future__ import annotations

import unittest

import numpy as np
import torch
from monai.utils import optional_import
from parameterized import parameterized

from monai_unlearn.metrics import membership_inference_score

_, has_sklearn = optional_import("sklearn")


@unittest.skipUnless(has_sklearn, "scikit-learn is not installed")
class TestMembershipInference(unittest.TestCase):
    def test_separable_losses_score_near_one(self):
        rng = np.random.default_rng(0)
        forget = rng.uniform(0.0, 0.05, size=60)  # memorised: tiny losses
        heldout = rng.uniform(1.0, 3.0, size=200)  # never seen: large losses
        result = membership_inference_score(forget, heldout)
        self.assertGreater(result["mean"], 0.95)
        self.assertEqual(result["n_per_group"], 60)
        self.assertEqual(result["n"], 120)
        self.assertEqual(result["n_splits"], 5)

    def test_scale_free(self):
        rng = np.random.default_rng(1)
        forget, heldout = rng.uniform(0, 1e-4, 40), rng.uniform(2e-4, 3e-4, 40)
        self.assertGreater(membership_inference_score(forget, heldout)["mean"], 0.95)

    def test_same_distribution_near_chance(self):
        rng = np.random.default_rng(2)
        means = [
            membership_inference_score(rng.exponential(1.0, 300), rng.exponential(1.0, 300), seed=s)["mean"]
            for s in range(5)
        ]
        self.assertLess(abs(float(np.mean(means)) - 0.5), 0.1)

    def test_deterministic_and_seed_dependent(self):
        rng = np.random.default_rng(3)
        forget, heldout = torch.from_numpy(rng.normal(1.0, 1.0, 50)), rng.normal(1.5, 1.0, 120).tolist()
        a = membership_inference_score(forget, heldout, seed=4)
        b = membership_inference_score(forget, heldout, seed=4)
        self.assertEqual(a, b)
        others = {membership_inference_score(forget, heldout, seed=s)["mean"] for s in range(6)}
        self.assertGreater(len(others), 1)
        self.assertGreaterEqual(a["std"], 0.0)

    def test_n_splits(self):
        result = membership_inference_score([0.1, 0.2, 0.15], [2.0, 2.5, 3.0, 2.2], n_splits=3)
        self.assertEqual(result["n_per_group"], 3)
        self.assertEqual(result["mean"], 1.0)

    @parameterized.expand(
        [
            ("too_few_forget", [0.1] * 4, [1.0] * 10, 5, "at least 5 samples per group"),
            ("too_few_heldout", [0.1] * 10, [1.0] * 2, 3, "10 forget and 2 held-out"),
            ("bad_splits", [0.1] * 10, [1.0] * 10, 1, "n_splits"),
            ("nan", [0.1] * 9 + [float("nan")], [1.0] * 10, 5, "NaN"),
            ("inf", [0.1] * 10, [1.0] * 9 + [float("inf")], 5, "infinite"),
        ]
    )
    def test_errors(self, _, forget, heldout, n_splits, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            membership_inference_score(forget, heldout, n_splits=n_splits)



class TestMembershipOrderInvariance(unittest.TestCase):
    def test_score_does_not_depend_on_sample_order(self):
        rng = np.random.default_rng(0)
        forget, heldout = rng.exponential(1.0, 60), rng.exponential(1.2, 45)
        base = membership_inference_score(forget, heldout, seed=3)
        for _ in range(3):
            shuffled = membership_inference_score(rng.permutation(forget), rng.permutation(heldout), seed=3)
            self.assertEqual(shuffled["mean"], base["mean"])
            self.assertEqual(shuffled["std"], base["std"])

if __name__ == "__main__":
    unittest.main()
