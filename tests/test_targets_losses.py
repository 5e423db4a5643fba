from __future__ import annotations

import unittest

import torch
import torch.nn.functional as F
from parameterized import parameterized

from monai_unlearn.core import (
    boundary_targets, distillation_loss, forget_loss, remain_loss, soft_cross_entropy, withdrawn_loss)


class TestBoundaryTargets(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.logits = torch.randn(5, 4)

    def test_hard(self):
        self.assertTrue(torch.equal(boundary_targets(self.logits, "hard"), self.logits.argmax(1)))

    @parameterized.expand([("soft", 1.0), ("soft", 3.0), ("topk", 1.0), ("topk", 0.5)])
    def test_distributions_sum_to_one(self, mode, temperature):
        target = boundary_targets(self.logits, mode, temperature=temperature, top_k=2)
        self.assertTrue(torch.allclose(target.sum(1), torch.ones(5)))
        self.assertTrue((target >= 0).all())
        self.assertTrue(torch.equal(target.argmax(1), self.logits.argmax(1)))

    def test_soft_temperature(self):
        target = boundary_targets(self.logits, "soft", temperature=2.0)
        self.assertTrue(torch.allclose(target, torch.softmax(self.logits / 2.0, 1)))

    def test_topk_keeps_k_classes_renormalised(self):
        target = boundary_targets(self.logits, "topk", top_k=2)
        self.assertTrue(((target > 0).sum(1) == 2).all())
        probs = torch.softmax(self.logits, 1)
        top = probs.topk(2, 1)
        expected = top.values / top.values.sum(1, keepdim=True)
        self.assertTrue(torch.allclose(target.gather(1, top.indices), expected))

    def test_topk_too_large(self):
        with self.assertRaisesRegex(ValueError, "top_k"):
            boundary_targets(self.logits, "topk", top_k=5)

    def test_unknown_mode(self):
        with self.assertRaisesRegex(ValueError, "unknown target mode"):
            boundary_targets(self.logits, "median")

    @parameterized.expand([("hard",), ("soft",)])
    def test_masked_voxels_keep_their_labels(self, mode):
        logits = torch.randn(2, 3, 6, 6)
        labels = torch.randint(0, 3, (2, 6, 6))
        mask = labels == 1
        target = boundary_targets(logits, mode, label_index=labels, mask=mask)
        hard = target if mode == "hard" else target.argmax(1)
        self.assertTrue(torch.equal(hard[~mask], labels[~mask]))
        self.assertTrue(torch.equal(hard[mask], logits.argmax(1)[mask]))
        if mode == "soft":
            self.assertTrue(torch.allclose(target.sum(1), torch.ones(2, 6, 6)))

    @parameterized.expand([("hard",), ("soft",), ("topk",)])
    def test_excluded_classes_are_never_targets(self, mode):
        # a withdrawn class: where the boundary point still favours it, the target is the best class that stays
        logits = torch.tensor([[5.0, 1.0, 2.0, 0.0], [0.0, 4.0, 3.0, 1.0], [1.0, 0.0, 0.5, 6.0]])
        excluded = torch.tensor([0, 3])
        target = boundary_targets(logits, mode, top_k=2, excluded_classes=excluded)
        hard = target if mode == "hard" else target.argmax(1)
        self.assertEqual(hard.tolist(), [2, 1, 2])
        if mode != "hard":
            self.assertTrue(torch.equal(target[:, excluded], torch.zeros(3, 2)))
            self.assertTrue(torch.allclose(target.sum(1), torch.ones(3)))
        unchanged = boundary_targets(logits, mode, top_k=2)  # without exclusions the boundary label stands
        self.assertEqual((unchanged if mode == "hard" else unchanged.argmax(1)).tolist(), [0, 1, 3])

    def test_excluded_classes_with_a_voxel_mask(self):
        logits = torch.zeros(1, 3, 2, 2)
        logits[:, 2] = 5.0  # the withdrawn class 2 wins everywhere at the boundary point
        logits[:, 1] = 1.0
        labels = torch.tensor([[[2, 0], [2, 1]]])
        target = boundary_targets(logits, "hard", label_index=labels, mask=labels == 2,
                                  excluded_classes=torch.tensor([2]))
        self.assertEqual(target.tolist(), [[[1, 0], [1, 1]]])  # forgotten voxels move, the others keep their label

    def test_every_class_excluded(self):
        with self.assertRaisesRegex(ValueError, "at least one class must stay"):
            boundary_targets(self.logits, "hard", excluded_classes=torch.arange(4))

    def test_mask_needs_labels(self):
        with self.assertRaisesRegex(ValueError, "label_index"):
            boundary_targets(torch.randn(2, 3, 4, 4), mask=torch.ones(2, 4, 4, dtype=torch.bool))


class TestLosses(unittest.TestCase):
    def test_soft_ce_matches_hard_ce_on_one_hot(self):
        logits = torch.randn(4, 3)
        labels = torch.tensor([0, 2, 1, 1])
        one_hot = F.one_hot(labels, 3).float()
        self.assertAlmostEqual(soft_cross_entropy(logits, one_hot).item(), F.cross_entropy(logits, labels).item(), 5)
        self.assertAlmostEqual(forget_loss(logits, one_hot).item(), forget_loss(logits, labels).item(), 5)

    def test_distillation_zero_on_identical(self):
        logits = torch.randn(4, 3)
        self.assertAlmostEqual(distillation_loss(logits, logits).item(), 0.0, 6)
        self.assertGreater(distillation_loss(logits, -logits).item(), 0.0)

    def test_remain_ce_ignores_unlabelled_voxels(self):
        logits = torch.randn(2, 3, 4, 4)
        labels = torch.randint(0, 3, (2, 4, 4))
        labels[0] = -100
        expected = F.cross_entropy(logits, labels)  # PyTorch's own mean over labelled voxels
        self.assertAlmostEqual(remain_loss(logits, labels, "ce").item(), expected.item(), 5)
        self.assertEqual(remain_loss(logits, torch.full_like(labels, -100), "ce").item(), 0.0)

    def test_remain_modes(self):
        logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        self.assertAlmostEqual(remain_loss(logits, labels, "ce").item(), F.cross_entropy(logits, labels).item(), 6)
        with self.assertRaisesRegex(ValueError, "reference"):
            remain_loss(logits, labels, "distill")
        with self.assertRaisesRegex(ValueError, "unknown remain loss"):
            remain_loss(logits, labels, "mse")

    def test_withdrawn_loss_is_minus_log_of_what_the_kept_classes_hold(self):
        torch.manual_seed(0)
        logits = torch.randn(6, 4)
        withdrawn = torch.tensor([1, 3])
        p = torch.softmax(logits, 1)[:, [1, 3]].sum(1)
        self.assertAlmostEqual(withdrawn_loss(logits, withdrawn).item(), (-torch.log1p(-p)).mean().item(), 5)
        # a class the model is certain of: large but finite, where -log(1 - p) in floating point is infinite
        certain = torch.tensor([[0.0, 200.0, 0.0, 0.0]])
        value = withdrawn_loss(certain, torch.tensor([1])).item()
        self.assertTrue(torch.isfinite(torch.tensor(value)))
        self.assertGreater(value, 190.0)
        self.assertAlmostEqual(withdrawn_loss(torch.tensor([[0.0, -200.0, 0.0]]), torch.tensor([1])).item(), 0.0, 6)

    def test_withdrawn_loss_averages_over_the_mask(self):
        torch.manual_seed(1)
        logits = torch.randn(2, 3, 4, 4)
        mask = torch.zeros(2, 4, 4, dtype=torch.bool)
        mask[0, :2] = True
        per_voxel = -torch.log1p(-torch.softmax(logits, 1)[:, 2])
        expected = per_voxel[mask].mean()
        self.assertAlmostEqual(withdrawn_loss(logits, torch.tensor([2]), mask).item(), expected.item(), 5)
        self.assertEqual(withdrawn_loss(logits, torch.tensor([2]), torch.zeros_like(mask)).item(), 0.0)


if __name__ == "__main__":
    unittest.main()
