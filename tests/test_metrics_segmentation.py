"""Dice per class, per-case losses, membership inference and summary rows for segmentation models."""

from __future__ import annotations

import math
import unittest

import torch
import torch.nn.functional as F
from monai.metrics import DiceMetric

from monai_unlearn.metrics import retrain_gap
from monai_unlearn.metrics.segmentation import (
    collect_segmentation_stats,
    dice_counts,
    dice_from_counts,
    evaluate_segmentation,
    is_segmentation_evaluation,
    segmentation_report,
    segmentation_summary_rows,
)
from monai_unlearn.runner import headline_rows


def setUpModule():
    torch.set_num_threads(1)


class FixedLogits(torch.nn.Module):
    """Returns the one-hot of a label map stored per image intensity index (image[:, 0, 0, 0] = case index)."""

    def __init__(self, predictions: torch.Tensor, num_classes: int = 3):
        super().__init__()
        self.register_buffer("logits", F.one_hot(predictions, num_classes).movedim(-1, 1).float() * 5)

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].long()]


def case_images(n: int, size: int = 8) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, size, size).clone()


class TestDice(unittest.TestCase):
    def setUp(self):
        g = torch.Generator().manual_seed(0)
        self.truth = torch.randint(0, 3, (4, 8, 8), generator=g)
        self.pred = torch.where(torch.rand(4, 8, 8, generator=g) < 0.7, self.truth, torch.randint(0, 3, (4, 8, 8), generator=g))
        self.truth[0][self.truth[0] == 2] = 1  # case 0 has no class 2: ignored for that class

    def test_matches_monai_dice_metric(self):
        logits = F.one_hot(self.pred, 3).movedim(-1, 1).float()
        counts = dice_counts(logits, self.truth, 3)
        ours = dice_from_counts(counts)
        metric = DiceMetric(include_background=True, reduction="none", ignore_empty=True)
        theirs = metric(F.one_hot(self.pred, 3).movedim(-1, 1), F.one_hot(self.truth, 3).movedim(-1, 1))
        self.assertTrue(torch.allclose(torch.nan_to_num(ours, -1.0), torch.nan_to_num(theirs, -1.0), atol=1e-6))
        self.assertTrue(math.isnan(float(ours[0, 2])))
        report = segmentation_report({"counts": counts, "loss": torch.zeros(4)}, include_background=False)
        self.assertEqual(set(report["per_class"]), {1, 2})
        self.assertAlmostEqual(report["per_class"][2], float(theirs[1:, 2].mean()), places=5)
        self.assertEqual(report["class_counts"][2], 3)
        with_bg = segmentation_report({"counts": counts, "loss": torch.zeros(4)}, include_background=True)
        self.assertIn(0, with_bg["per_class"])

    def test_perfect_and_forgotten(self):
        model = FixedLogits(self.truth)
        ev = evaluate_segmentation(model, [(case_images(4), self.truth[:, None])], forget_classes=[2])
        self.assertAlmostEqual(ev["forget"]["dice"], 1.0)
        self.assertAlmostEqual(ev["forget"]["forgotten_dice"], 1.0)
        # predict class 2 as class 1 everywhere: class 2 Dice 0, class 1 intact on the voxels that are not class 2
        forgot = self.truth.clone()
        forgot[forgot == 2] = 1
        ev = evaluate_segmentation(FixedLogits(forgot), [(case_images(4), self.truth[:, None])], forget_classes=[2])
        self.assertAlmostEqual(ev["forget"]["forgotten_dice"], 0.0)
        self.assertAlmostEqual(ev["forget"]["kept_dice"], 1.0)
        self.assertLess(ev["forget"]["per_class"][1], 1.0)  # plain Dice counts the relabelled voxels against it


class TestEvaluateSegmentation(unittest.TestCase):
    def test_shape_mia_summary_and_gap(self):
        g = torch.Generator().manual_seed(1)
        truth = torch.randint(0, 3, (12, 8, 8), generator=g)
        noisy = torch.where(torch.rand(12, 8, 8, generator=g) < 0.6, truth, torch.randint(0, 3, (12, 8, 8), generator=g))
        pred = torch.cat([truth[:6], noisy[6:]])  # forget cases fit perfectly, test cases do not
        model = FixedLogits(pred)
        images = case_images(12)
        forget = [(images[:6], truth[:6, None])]
        test = [(images[6:], truth[6:, None])]
        ev = evaluate_segmentation(model, forget, forget, test, mia_splits=3)
        self.assertTrue(is_segmentation_evaluation(ev))
        self.assertEqual(set(ev), {"task", "forget_classes", "forget", "remain", "test", "mia"})
        self.assertGreater(ev["mia"]["mean"], 0.9)  # the losses separate members from non-members
        row = segmentation_summary_rows(ev)
        self.assertEqual(list(row), ["forget_dice", "remain_dice", "test_dice", "mia"])
        self.assertEqual(headline_rows(ev), row)
        gap = retrain_gap(row, segmentation_summary_rows(evaluate_segmentation(model, test, None, forget, mia_splits=3)))
        self.assertIn("average_gap", gap)
        class_row = segmentation_summary_rows(evaluate_segmentation(model, forget, None, test, forget_classes=[1],
                                                                    mia_splits=3))
        self.assertEqual(list(class_row), ["forget_dice", "kept_dice", "test_forget", "test_kept", "mia"])

    def test_sliding_window_and_surface_distance(self):
        truth = torch.zeros(2, 8, 8, dtype=torch.long)
        truth[:, 2:6, 2:6] = 1
        stats = collect_segmentation_stats(FixedLogits(truth, 2), [(case_images(2), truth[:, None])], roi_size=(8, 8),
                                           surface_distance=True)
        report = segmentation_report(stats)
        self.assertAlmostEqual(report["dice"], 1.0)
        self.assertAlmostEqual(report["surface_distance"][1], 0.0)

    def test_bad_input(self):
        model = FixedLogits(torch.zeros(2, 8, 8, dtype=torch.long))
        with self.assertRaisesRegex(ValueError, "do not fit network output"):
            evaluate_segmentation(model, [(case_images(2), torch.zeros(2, 1, 6, 6))])
        with self.assertRaisesRegex(ValueError, "outside the network's classes"):
            evaluate_segmentation(model, [(case_images(2), torch.full((2, 1, 8, 8), 7))])
        with self.assertRaisesRegex(ValueError, "no batches"):
            evaluate_segmentation(model, [])


if __name__ == "__main__":
    unittest.main()
