"""Metric-based membership inference (confidence, entropy, modified entropy) and the MIA-efficacy."""

from __future__ import annotations

import math
import unittest

import numpy as np
import torch
from parameterized import parameterized
from torch.utils.data import DataLoader, TensorDataset

from monai_unlearn.metrics import (
    MIA_ATTACKS,
    evaluate_mia_variants,
    fit_threshold,
    membership_features,
    mia_efficacy,
    threshold_attack,
)


def logits_with_confidence(n: int, p_true: np.ndarray, labels: np.ndarray, classes: int = 4) -> torch.Tensor:
    """Logits whose softmax gives ``p_true`` to the label and spreads the rest evenly."""
    p = np.repeat(((1 - p_true) / (classes - 1))[:, None], classes, axis=1)
    p[np.arange(n), labels] = p_true
    return torch.tensor(np.log(p), dtype=torch.float32)


class TestFeatures(unittest.TestCase):
    def test_values(self):
        logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]]))
        labels = torch.tensor([0, 2])
        f = membership_features(logits, labels)
        np.testing.assert_allclose(f["confidence"], [0.7, 1 / 3], rtol=1e-6)
        h0 = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
        np.testing.assert_allclose(f["entropy"], [-h0, -math.log(3)], rtol=1e-6)
        m0 = -(0.3 * math.log(0.7)) - (0.2 * math.log(0.8) + 0.1 * math.log(0.9))
        m1 = -(2 / 3) * math.log(1 / 3) - 2 * (1 / 3) * math.log(2 / 3)
        np.testing.assert_allclose(f["modified_entropy"], [-m0, -m1], rtol=1e-6)

    def test_modified_entropy_uses_the_label(self):
        logits = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05]]))
        f = membership_features(logits, torch.tensor([0, 1]))
        self.assertEqual(f["entropy"][0], f["entropy"][1])
        self.assertGreater(f["modified_entropy"][0], f["modified_entropy"][1])  # right label: more member-like

    def test_bad_shapes(self):
        with self.assertRaisesRegex(ValueError, r"\(N, C\)"):
            membership_features(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
        with self.assertRaisesRegex(ValueError, "labels must lie"):
            membership_features(torch.zeros(3, 2), torch.tensor([0, 1, 2]))


class TestThreshold(unittest.TestCase):
    def test_fit_threshold_separable(self):
        t, accuracy = fit_threshold(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]))
        self.assertEqual((t, accuracy), (2.5, 1.0))

    def test_fit_threshold_needs_both_groups(self):
        with self.assertRaises(ValueError):
            fit_threshold(np.array([]), np.array([1.0]))

    def test_separable_near_one_identical_near_half(self):
        rng = np.random.default_rng(0)
        separable = threshold_attack(rng.normal(4, 1, 1000), rng.normal(0, 1, 1000))
        self.assertGreater(separable["accuracy"], 0.95)
        identical = threshold_attack(rng.normal(0, 1, 1000), rng.normal(0, 1, 1000))
        self.assertLess(abs(identical["accuracy"] - 0.5), 0.05)
        self.assertEqual(identical["n_per_group"], 1000)

    def test_per_class_thresholds(self):
        rng = np.random.default_rng(1)
        # class 0 separates at 0, class 1 at 10: one global threshold cannot do both
        m = np.concatenate([rng.normal(1, 0.2, 200), rng.normal(11, 0.2, 200)])
        n = np.concatenate([rng.normal(-1, 0.2, 200), rng.normal(9, 0.2, 200)])
        lab = np.repeat([0, 1], 200)
        glob = threshold_attack(m, n, lab, lab, per_class=False)
        per = threshold_attack(m, n, lab, lab, per_class=True)
        self.assertLess(glob["accuracy"], 0.9)
        self.assertGreater(per["accuracy"], 0.99)
        self.assertEqual(sorted(per["class_thresholds"]), [0, 1])
        with self.assertRaisesRegex(ValueError, "need"):
            threshold_attack(m[:2], n[:2])
        with self.assertRaisesRegex(ValueError, "labels"):
            threshold_attack(m, n, per_class=True)


class TestEfficacy(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(0)
        self.n = 600
        self.labels = rng.integers(0, 4, self.n)
        self.member = logits_with_confidence(self.n, rng.uniform(0.9, 0.99, self.n), self.labels)
        self.nonmember = logits_with_confidence(self.n, rng.uniform(0.3, 0.6, self.n), self.labels)
        self.nonmember2 = logits_with_confidence(self.n, rng.uniform(0.3, 0.6, self.n), self.labels)
        self.y = torch.tensor(self.labels)

    @parameterized.expand([(a,) for a in MIA_ATTACKS])
    def test_forget_like_heldout_is_called_nonmember(self, attack):
        out = mia_efficacy(self.member, self.y, self.nonmember, self.y, self.nonmember2, self.y, attacks=[attack])
        self.assertGreater(out[attack]["attack_accuracy"], 0.95)
        self.assertGreater(out[attack]["efficacy"], 0.95)

    @parameterized.expand([(a,) for a in MIA_ATTACKS])
    def test_forget_like_training_data_is_called_member(self, attack):
        out = mia_efficacy(self.member, self.y, self.nonmember, self.y, self.member[:100], self.y[:100], attacks=[attack])
        self.assertLess(out[attack]["efficacy"], 0.05)
        self.assertEqual(out[attack]["n_forget"], 100)

    def test_identical_distributions_attack_is_chance(self):
        out = mia_efficacy(self.nonmember, self.y, self.nonmember2, self.y, self.nonmember, self.y)
        for attack in MIA_ATTACKS:
            self.assertLess(abs(out[attack]["attack_accuracy"] - 0.5), 0.07, attack)

    def test_per_class_falls_back_for_an_unseen_class(self):
        # forget class 3 is absent from the members / non-members: the global threshold applies
        keep = self.labels != 3
        out = mia_efficacy(self.member[keep], self.y[keep], self.nonmember[keep], self.y[keep],
                           self.nonmember2[~keep], self.y[~keep], per_class=True)
        self.assertGreater(out["confidence"]["efficacy"], 0.95)

    def test_unknown_attack(self):
        with self.assertRaisesRegex(ValueError, "unknown attack"):
            mia_efficacy(self.member, self.y, self.nonmember, self.y, self.member, self.y, attacks=["loss"])

    def test_evaluate_mia_variants_with_a_model(self):
        torch.manual_seed(0)
        x = torch.randn(120, 5)
        y = torch.randint(0, 3, (120,))
        model = torch.nn.Linear(5, 3)
        mk = lambda a, b: DataLoader(TensorDataset(x[a:b], y[a:b]), 16)  # noqa: E731
        out = evaluate_mia_variants(model, mk(0, 20), mk(20, 70), mk(70, 120))
        self.assertEqual(set(out), set(MIA_ATTACKS))
        for record in out.values():
            self.assertGreaterEqual(record["efficacy"], 0.0)
            self.assertLessEqual(record["efficacy"], 1.0)
            self.assertEqual(record["n_forget"], 20)


if __name__ == "__main__":
    unittest.main()
