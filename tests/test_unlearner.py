from __future__ import annotations

import copy
import unittest

import torch
import torch.nn.functional as F
from parameterized import parameterized

from monai_unlearn.core import PSGConfig, PSGUnlearner, check_labels
from tests.test_boundary_search import tiny_classifier, tiny_segmenter


def boundary_shrink_by_hand(model, x, y, eps, lr):
    """Chen et al. (CVPR 2023) in a few lines: FGSM to the neighbour label, then one SGD step toward it."""
    reference = copy.deepcopy(model)
    x_adv = x.clone().requires_grad_(True)
    F.cross_entropy(reference(x_adv), y).backward()
    x_adv = (x + eps * x_adv.grad.sign()).clamp(0.0, 1.0)
    neighbour = reference(x_adv).argmax(1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    optimizer.zero_grad()
    F.cross_entropy(model(x), neighbour).backward()
    optimizer.step()
    return model


class TestPSGUnlearner(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(2)
        self.x = torch.rand(8, 1, 4, 4)
        self.y = torch.randint(0, 3, (8,))
        self.xr = torch.rand(8, 1, 4, 4)
        self.yr = torch.randint(0, 3, (8,))

    def test_equals_boundary_shrink(self):
        model = tiny_classifier()
        expected = boundary_shrink_by_hand(copy.deepcopy(model), self.x, self.y, eps=0.1, lr=0.5)
        config = PSGConfig(eps=0.1, num_steps=1, step_size=0.1, gamma=0.0, lam=0.0, phi=0.0, value_range=(0, 1))
        unlearner = PSGUnlearner(model, torch.optim.SGD(model.parameters(), lr=0.5), config)
        unlearner.step(self.x, self.y)
        for got, want in zip(model.parameters(), expected.parameters()):
            self.assertTrue(torch.allclose(got, want, atol=1e-7))
        self.assertFalse(torch.equal(next(model.parameters()), next(tiny_classifier().parameters())))

    def test_reference_unchanged_and_losses_detached(self):
        model = tiny_classifier()
        original = copy.deepcopy(model.state_dict())
        unlearner = PSGUnlearner(model, torch.optim.SGD(model.parameters(), lr=0.1), PSGConfig(phi=1.0))
        out = unlearner.step(self.x, self.y, self.xr, self.yr)
        for name, value in unlearner.reference.state_dict().items():
            self.assertTrue(torch.equal(value, original[name]))
        for key in ("loss", "forget_loss", "remain_loss", "flip_rate"):
            self.assertFalse(out[key].requires_grad)
        self.assertAlmostEqual(out["loss"].item(), out["forget_loss"].item() + out["remain_loss"].item(), 5)
        self.assertGreater(out["remain_loss"].item(), 0.0)

    @parameterized.expand([("ce",), ("distill",)])
    def test_remain_term_changes_update(self, mode):
        # two steps: distillation toward the reference has zero gradient while the model still equals it
        a, b = tiny_classifier(), tiny_classifier()
        forget_only = PSGUnlearner(a, torch.optim.SGD(a.parameters(), lr=0.1), PSGConfig(phi=0.0))
        with_remain = PSGUnlearner(b, torch.optim.SGD(b.parameters(), lr=0.1), PSGConfig(phi=1.0, remain_loss=mode))
        for _ in range(2):
            forget_only.step(self.x, self.y)
            with_remain.step(self.x, self.y, self.xr, self.yr)
        self.assertFalse(torch.allclose(next(a.parameters()), next(b.parameters())))

    def test_phi_without_remain_batch(self):
        model = tiny_classifier()
        unlearner = PSGUnlearner(model, torch.optim.SGD(model.parameters(), lr=0.1), PSGConfig(phi=0.5))
        with self.assertRaisesRegex(ValueError, "remain batch"):
            unlearner.step(self.x, self.y)

    @parameterized.expand([("soft",), ("topk",)])
    def test_soft_targets_step(self, target):
        model = tiny_classifier()
        unlearner = PSGUnlearner(model, torch.optim.SGD(model.parameters(), lr=0.1), PSGConfig(target=target, phi=0.0))
        out = unlearner.step(self.x, self.y)
        self.assertEqual(out["target"].shape, (8, 3))

    def test_label_layouts_agree(self):
        results = []
        for label in (self.y, self.y[:, None], F.one_hot(self.y, 3).float()):
            model = tiny_classifier()
            PSGUnlearner(model, torch.optim.SGD(model.parameters(), lr=0.1), PSGConfig(phi=0.0)).step(self.x, label)
            results.append(next(model.parameters()).detach().clone())
        self.assertTrue(torch.equal(results[0], results[1]))
        self.assertTrue(torch.equal(results[0], results[2]))

    def test_lambda_schedule_over_iterations(self):
        model = tiny_classifier()
        cfg = PSGConfig(lam=1.0, lambda_schedule="linear", phi=0.0)
        unlearner = PSGUnlearner(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg, total_iterations=4)
        seen = []
        for _ in range(4):
            seen.append(unlearner.current_lambda())
            unlearner.step(self.x, self.y)
        self.assertEqual(seen, [0.75, 0.5, 0.25, 0.0])

    def test_segmentation_class_mask(self):
        model = tiny_segmenter(3)
        x = torch.rand(2, 1, 6, 6, 6)
        y = torch.randint(0, 3, (2, 1, 6, 6, 6))
        mask = y[:, 0] == 2
        unlearner = PSGUnlearner(model, torch.optim.SGD(model.parameters(), lr=0.1), PSGConfig(eps=0.2, phi=0.0))
        out = unlearner.step(x, y, forget_mask=mask)
        self.assertTrue(torch.equal(out["target"][~mask], y[:, 0][~mask]))
        self.assertEqual(out["target"].shape, (2, 6, 6, 6))

    def test_withdrawn_term_only_where_classes_are_withdrawn(self):
        from monai_unlearn.core.losses import withdrawn_loss

        config = PSGConfig(phi=0.0, withdrawn_weight=2.0)
        model = tiny_classifier()
        # no withdrawn classes (the paper's targets, a partial request): the term is left out
        plain = PSGUnlearner(copy.deepcopy(model), torch.optim.SGD(model.parameters(), lr=0.0), config)
        out = plain.compute_losses(self.x, self.y)
        target = out["target"]
        self.assertAlmostEqual(out["forget_loss"].item(), F.cross_entropy(out["forget_logits"], target).item(), 5)
        withdrawn = PSGUnlearner(copy.deepcopy(model), torch.optim.SGD(model.parameters(), lr=0.0), config,
                                 withdrawn_classes=[2])
        out = withdrawn.compute_losses(self.x, self.y)
        expected = F.cross_entropy(out["forget_logits"], out["target"]) + 2.0 * withdrawn_loss(
            out["forget_logits"], torch.tensor([2]))
        self.assertAlmostEqual(out["forget_loss"].item(), expected.item(), 5)
        self.assertTrue((out["target"] != 2).all())

    def test_withdrawn_term_lowers_the_withdrawn_class_probability(self):
        forget = self.y == 2

        def probability_after(weight):
            torch.manual_seed(0)
            model = tiny_classifier()
            unlearner = PSGUnlearner(model, torch.optim.SGD(model.parameters(), lr=0.5),
                                     PSGConfig(eps=0.2, phi=1.0, withdrawn_weight=weight), withdrawn_classes=[2])
            for _ in range(5):
                unlearner.step(self.x[forget], self.y[forget], self.xr[~forget], self.yr[~forget])
            with torch.no_grad():
                return torch.softmax(model(self.x[forget]), 1)[:, 2].mean().item()

        self.assertLess(probability_after(3.0), probability_after(0.0))

    def test_check_labels(self):
        with self.assertRaisesRegex(ValueError, r"predicts 3 classes \(0..2\)"):
            check_labels(torch.zeros(2, 3), torch.tensor([0, 5]))
        check_labels(torch.zeros(2, 3), torch.tensor([0, 2]))


if __name__ == "__main__":
    unittest.main()
