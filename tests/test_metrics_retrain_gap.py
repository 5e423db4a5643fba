from __future__ import annotations

import unittest

import numpy as np
import torch
from parameterized import parameterized

from monai_unlearn.metrics import prediction_agreement, retrain_gap


class TestRetrainGap(unittest.TestCase):
    def test_flat_metrics(self):
        ours = {"forget_accuracy": 0.10, "remain_accuracy": 0.95, "test_accuracy": 0.90, "mia": 0.55, "name": "psg"}
        theirs = {"forget_accuracy": 0.0, "remain_accuracy": 0.99, "test_accuracy": 0.92, "mia": 0.50}
        gap = retrain_gap(ours, theirs)
        self.assertEqual(list(gap), ["forget_accuracy", "remain_accuracy", "test_accuracy", "mia", "average_gap"])
        self.assertAlmostEqual(gap["forget_accuracy"], 0.10)
        self.assertAlmostEqual(gap["remain_accuracy"], 0.04)
        self.assertAlmostEqual(gap["test_accuracy"], 0.02)
        self.assertAlmostEqual(gap["mia"], 0.05)
        self.assertAlmostEqual(gap["average_gap"], (0.10 + 0.04 + 0.02 + 0.05) / 4)

    def test_nested_reports_skip_sizes_and_per_class(self):
        ours = {
            "forget": {"accuracy": 0.2, "count": 10, "per_class": {0: 0.1}, "mean_loss": 3.0},
            "test": {"accuracy": torch.tensor(0.8), "count": 50},
            "mia": {"mean": np.float64(0.6), "std": 0.1, "n": 20, "n_splits": 5},
            "wall_time": True,
        }
        theirs = {
            "forget": {"accuracy": 0.0, "count": 10, "per_class": {0: 0.0}, "mean_loss": 5.0},
            "test": {"accuracy": 0.85, "count": 50},
            "mia": {"mean": 0.5, "std": 0.05, "n": 20, "n_splits": 5},
            "wall_time": True,
        }
        gap = retrain_gap(ours, theirs)
        self.assertEqual(set(gap), {"forget.accuracy", "forget.mean_loss", "test.accuracy", "mia.mean", "average_gap"})
        self.assertAlmostEqual(gap["mia.mean"], 0.1)
        self.assertAlmostEqual(gap["test.accuracy"], 0.05, places=6)
        self.assertAlmostEqual(gap["average_gap"], (0.2 + 2.0 + 0.05 + 0.1) / 4, places=6)

    def test_explicit_keys(self):
        ours = {"forget": {"accuracy": 0.2}, "test": {"accuracy": 0.8, "count": 4}}
        theirs = {"forget": {"accuracy": 0.1}, "test": {"accuracy": 0.9, "count": 6}}
        gap = retrain_gap(ours, theirs, keys=["forget.accuracy", "test.count"])
        self.assertEqual(
            gap, {"forget.accuracy": gap["forget.accuracy"], "test.count": 2.0, "average_gap": gap["average_gap"]}
        )
        self.assertAlmostEqual(gap["average_gap"], (0.1 + 2.0) / 2)

    def test_identical_is_zero(self):
        m = {"a": 0.3, "b": 0.7}
        self.assertEqual(retrain_gap(m, dict(m))["average_gap"], 0.0)

    @parameterized.expand(
        [
            ("nothing_shared", {"a": 1.0}, {"b": 1.0}, None, "share no numeric key"),
            ("only_text", {"a": "x"}, {"a": "y"}, None, "share no numeric key"),
            ("missing_key", {"a": 1.0}, {"a": 1.0}, ["b"], "'b' is missing from metrics"),
            ("not_numeric", {"a": 1.0}, {"a": None}, ["a"], "not a number"),
            ("empty_keys", {"a": 1.0}, {"a": 1.0}, [], "empty"),
        ]
    )
    def test_errors(self, _, ours, theirs, keys, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            retrain_gap(ours, theirs, keys=keys)


class TestPredictionAgreement(unittest.TestCase):
    def test_logits(self):
        a = torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0], [0.0, 5.0]])
        b = torch.tensor([[5.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        self.assertAlmostEqual(prediction_agreement(a, b), 0.75)
        self.assertEqual(prediction_agreement(a, a), 1.0)

    def test_segmentation_and_indices(self):
        a = torch.zeros(1, 2, 2, 2)
        b = a.clone()
        b[0, 1, 0, 0] = 1.0
        self.assertAlmostEqual(prediction_agreement(a, b), 0.75)
        self.assertAlmostEqual(prediction_agreement(torch.tensor([0, 1, 2]), torch.tensor([0, 2, 2])), 2 / 3)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "shapes"):
            prediction_agreement(torch.zeros(2, 3), torch.zeros(3, 3))
        with self.assertRaisesRegex(ValueError, "empty"):
            prediction_agreement(torch.zeros(0, 3), torch.zeros(0, 3))


if __name__ == "__main__":
    unittest.main()
