"""Per-voxel PSG for 2D and 3D segmentation networks through ``unlearn()``: forgetting a label class or whole cases."""

from __future__ import annotations

import unittest

import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandSpatialCropd
from parameterized import parameterized

from monai_unlearn import PSGConfig, unlearn
from monai_unlearn.core.unlearner import PSGUnlearner
from monai_unlearn.metrics.segmentation import evaluate_segmentation
from monai_unlearn.core.checks import class_mask, validate_first_batch
from tests.segmentation_fixtures import tiny_unet, toy_volumes, train_toy


def setUpModule():
    torch.set_num_threads(1)


def batches(x: torch.Tensor, y: torch.Tensor, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


class TestPerVoxelTargets(unittest.TestCase):
    @parameterized.expand([("2d", 2, (2, 1, 8, 8)), ("3d", 3, (2, 1, 8, 8, 8))])
    def test_kept_voxels_keep_their_labels(self, _, dims, shape):
        model = tiny_unet(dims)
        x = torch.rand(shape)
        y = torch.randint(0, 3, shape)
        y[0, 0].flatten()[:4] = 2  # make sure the class is present
        mask = class_mask(y[:, 0], torch.tensor([2]))
        unlearner = PSGUnlearner(model, torch.optim.SGD(model.parameters(), lr=0.01), PSGConfig(eps=0.5, phi=0.0))
        out = unlearner.step(x, y, forget_mask=mask)
        self.assertEqual(out["target"].shape, (shape[0], *shape[2:]))
        self.assertTrue(torch.equal(out["target"][~mask], y[:, 0][~mask]))
        # masked voxels take the reference's label at the boundary point, which may or may not differ
        self.assertTrue(bool(((out["target"] >= 0) & (out["target"] < 3)).all()))

    @parameterized.expand([("2d", 2, 16), ("3d", 3, 8)])
    def test_unlearn_runs_in_both_modes(self, _, dims, size):
        x, y = toy_volumes(4, size, dims, seed=0)
        net = tiny_unet(dims)
        data = batches(x, y, 2)
        config = PSGConfig(eps=0.3, phi=1.0, seed=0)
        revised, result = unlearn(net, data, data, config=config, epochs=1, task="segmentation", forget_classes=[2],
                                  progress=False)
        self.assertEqual(result.before["task"], "segmentation")
        self.assertIn("forgotten_dice", result.after["forget"])
        self.assertIn("forget_dice", result.table())
        self.assertEqual(result.stopping["regime"]["regime"], "segmentation_class")  # the default decides
        self.assertEqual(result.stopping["calibration"]["target"], 0.0)
        held_out = batches(*toy_volumes(2, size, dims, seed=1), 2)
        _, cases = unlearn(net, data[:1], data[1:], config=config, epochs=1, task="segmentation", progress=False,
                           val_loader=held_out)
        self.assertIsNone(cases.after["forget_classes"])
        self.assertIn("remain_dice", cases.table())
        self.assertEqual(cases.stopping["regime"]["regime"], "segmentation_cases")
        # the cases' target is the original's Dice on the held-out cases, not on the forget cases
        from monai_unlearn.metrics.headline import forget_score

        self.assertAlmostEqual(cases.stopping["calibration"]["target"],
                               forget_score(evaluate_segmentation(net, held_out)), places=6)
        self.assertIn("held-out cases", cases.stopping["calibration"]["notes"][0])
        for p, q in zip(net.parameters(), revised.parameters()):
            self.assertEqual(p.shape, q.shape)

    def test_remain_term_ignores_the_forgotten_class(self):
        """With forget_classes, a remain batch made only of the forgotten class contributes no remain loss."""
        x, y = toy_volumes(2, 8, 2, seed=3)
        net = tiny_unet(2)
        recorded = {}
        original = PSGUnlearner.compute_losses  # what the engine's iteration calls before the update

        def spy(self, fi, fl, ri=None, rl=None, mask=None):
            recorded["remain_label"] = rl
            return original(self, fi, fl, ri, rl, mask)

        PSGUnlearner.compute_losses = spy
        try:
            unlearn(net, [(x, y)], [(x, y)], config=PSGConfig(eps=0.2, phi=1.0), epochs=1, task="segmentation",
                    forget_classes=[1], evaluate=False, progress=False)
        finally:
            PSGUnlearner.compute_losses = original
        remain = recorded["remain_label"]
        self.assertTrue(bool((remain[y[:, 0] == 1] == -100).all()))
        self.assertTrue(torch.equal(remain[y[:, 0] != 1], y[:, 0][y[:, 0] != 1]))


class TestPatchesAndSlidingWindow(unittest.TestCase):
    def test_random_crops_and_sliding_window_evaluation(self):
        x, y = toy_volumes(6, 16, 2, seed=1)
        items = [{"image": x[i], "label": y[i]} for i in range(len(x))]
        crops = Compose([RandSpatialCropd(keys=["image", "label"], roi_size=(8, 8), random_size=False)])
        crop_loader = DataLoader(Dataset(items, crops), batch_size=3, shuffle=True)
        whole = DataLoader(Dataset(items), batch_size=3)
        net = tiny_unet(2)
        seen = []

        def evaluate_fn(model):
            seen.append(True)
            return evaluate_segmentation(model, whole, None, whole, forget_classes=[2], roi_size=(8, 8),
                                         mia_splits=2)

        _, result = unlearn(net, crop_loader, crop_loader, config=PSGConfig(eps=0.3, phi=0.5), epochs=1,
                            task="segmentation", forget_classes=[2], evaluate_fn=evaluate_fn, progress=False)
        self.assertEqual(len(seen), 2)  # before and after
        self.assertEqual(result.after["forget"]["count"], 6)
        # the built-in evaluation with a sliding window on whole images
        ev = evaluate_segmentation(net, whole, roi_size=8, sw_batch_size=2)
        self.assertEqual(set(ev["forget"]["per_class"]), {1, 2})


class TestForgettingAClass(unittest.TestCase):
    def test_class_dice_drops_others_stay(self):
        x, y = toy_volumes(24, 16, 2, seed=0)
        net = train_toy(tiny_unet(2), x, y, steps=40)
        xt, yt = toy_volumes(8, 16, 2, seed=1)
        revised, result = unlearn(
            net, batches(x, y), batches(x, y), config=PSGConfig(eps=0.3, phi=1.0, seed=0), epochs=10, lr=0.01,
            task="segmentation", forget_classes=[2], test_loader=[(xt, yt)], progress=False,
        )
        before, after = result.before, result.after
        self.assertGreater(before["forget"]["forgotten_dice"], 0.8)
        self.assertLess(after["forget"]["forgotten_dice"], before["forget"]["forgotten_dice"] - 0.4)
        self.assertLess(after["test"]["forgotten_dice"], before["test"]["forgotten_dice"] - 0.3)
        self.assertGreater(after["forget"]["kept_dice"], before["forget"]["kept_dice"] - 0.05)
        self.assertGreater(after["test"]["kept_dice"], before["test"]["kept_dice"] - 0.05)
        self.assertGreater(result.history[0]["flip_rate"], 0.0)


class TestBadInput(unittest.TestCase):
    def setUp(self):
        self.net = tiny_unet(2)
        self.x, self.y = toy_volumes(2, 8, 2)

    def test_class_the_network_does_not_output(self):
        with self.assertRaisesRegex(ValueError, r"cannot forget class\(es\) \[5\].*outputs 3 classes"):
            unlearn(self.net, [(self.x, self.y)], None, config=PSGConfig(phi=0.0), epochs=1, task="segmentation",
                    forget_classes=[5], progress=False)

    def test_label_map_shape_mismatch(self):
        wrong = torch.zeros(2, 1, 6, 6, dtype=torch.long)
        with self.assertRaisesRegex(ValueError, r"label maps have spatial shape \(6, 6\).*must have its image's size"):
            unlearn(self.net, [(self.x, wrong)], None, config=PSGConfig(phi=0.0), epochs=1, task="segmentation",
                    progress=False)
        with self.assertRaisesRegex(ValueError, "does not match"):
            validate_first_batch(self.net.eval(), self.x, wrong, "forget")

    def test_forget_classes_needs_segmentation(self):
        with self.assertRaisesRegex(ValueError, "task='segmentation'"):
            unlearn(self.net, [(self.x, self.y)], None, config=PSGConfig(phi=0.0), forget_classes=[1], progress=False)
        with self.assertRaisesRegex(ValueError, "unknown task"):
            unlearn(self.net, [(self.x, self.y)], None, config=PSGConfig(phi=0.0), task="detection", progress=False)
        with self.assertRaisesRegex(ValueError, "forget_classes is empty"):
            unlearn(self.net, [(self.x, self.y)], None, config=PSGConfig(phi=0.0), task="segmentation",
                    forget_classes=[], progress=False)


if __name__ == "__main__":
    unittest.main()
