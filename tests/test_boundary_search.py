from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from monai_unlearn.core import PSGBoundarySearch, PSGConfig, frozen_reference


def tiny_classifier(in_features: int = 16, classes: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(in_features, 12), torch.nn.Tanh(), torch.nn.Linear(12, classes)
    )


def fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 60, lr: float = 0.05) -> torch.nn.Module:
    """Train ``model`` on the whole batch ``(x, y)`` with Adam for ``steps`` steps (in place); returns it."""
    optimizer = torch.optim.Adam(model.parameters(), lr)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model


def tiny_segmenter(dims: int = 2, classes: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(conv(1, 4, 3, padding=1), torch.nn.Tanh(), conv(4, classes, 1))


class TestFrozenReference(unittest.TestCase):
    def test_frozen_copy(self):
        model = tiny_classifier()
        model.train()
        ref = frozen_reference(model)
        self.assertFalse(ref.training)
        self.assertTrue(model.training)
        self.assertTrue(all(not p.requires_grad for p in ref.parameters()))
        self.assertTrue(all(p.requires_grad for p in model.parameters()))
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        self.assertFalse(torch.equal(next(model.parameters()), next(ref.parameters())))


class TestBoundarySearch(unittest.TestCase):
    def setUp(self):
        self.ref = frozen_reference(tiny_classifier())
        torch.manual_seed(1)
        self.x = torch.rand(6, 1, 4, 4)
        self.y = torch.randint(0, 3, (6,))

    @parameterized.expand(
        [
            ({"eps": 0.05, "num_steps": 5, "gamma": 0.5, "lam": 0.2},),
            ({"eps": 0.3, "num_steps": 3, "step_size": 0.2, "noise": "cauchy", "gamma": 2.0},),
            ({"eps": 0.1, "num_steps": 4, "step_schedule": "sqrt", "noise": "laplace", "gamma": 1.0},),
            ({"eps": 0.2, "num_steps": 2, "noise": "uniform", "gamma": 1.0, "early_stop": True},),
        ]
    )
    def test_stays_in_ball_and_range(self, kwargs):
        search = PSGBoundarySearch(self.ref, PSGConfig(value_range=(0.0, 1.0), seed=0, **kwargs))
        found = search(self.x, self.y)
        delta = (found.boundary_input - self.x).abs().max().item()
        self.assertLessEqual(delta, kwargs["eps"] + 1e-6)
        self.assertGreaterEqual(found.boundary_input.min().item(), 0.0)
        self.assertLessEqual(found.boundary_input.max().item(), 1.0)
        self.assertEqual(found.boundary_logits.shape, (6, 3))
        self.assertFalse(found.boundary_input.requires_grad)

    def test_relative_eps_and_batch_range(self):
        x = self.x * 200.0 - 50.0  # intensity range about 200
        search = PSGBoundarySearch(self.ref, PSGConfig(eps=0.01, eps_mode="relative", value_range="batch"))
        found = search(x, self.y)
        delta = (found.boundary_input - x).abs().max().item()
        span = (x.max() - x.min()).item()
        self.assertAlmostEqual(delta, 0.01 * span, delta=1e-3)
        self.assertGreaterEqual(found.boundary_input.min().item(), x.min().item() - 1e-4)
        self.assertLessEqual(found.boundary_input.max().item(), x.max().item() + 1e-4)

    def test_no_weight_gradients_on_reference(self):
        search = PSGBoundarySearch(self.ref, PSGConfig(num_steps=3))
        search(self.x, self.y)
        self.assertTrue(all(p.grad is None for p in self.ref.parameters()))

    def test_ascends_the_loss(self):
        search = PSGBoundarySearch(self.ref, PSGConfig(eps=0.5, num_steps=5, step_size=0.1, value_range=None))
        found = search(self.x, self.y)
        before = torch.nn.functional.cross_entropy(self.ref(self.x), self.y)
        after = torch.nn.functional.cross_entropy(found.boundary_logits, self.y)
        self.assertGreater(after.item(), before.item())

    def test_proximity_pulls_back(self):
        far = PSGBoundarySearch(self.ref, PSGConfig(eps=1.0, num_steps=6, step_size=0.1, value_range=None))
        near = PSGBoundarySearch(self.ref, PSGConfig(eps=1.0, num_steps=6, step_size=0.1, value_range=None, lam=1e4))
        d_far = (far(self.x, self.y).boundary_input - self.x).abs().mean()
        d_near = (near(self.x, self.y).boundary_input - self.x).abs().mean()
        self.assertLess(d_near.item(), d_far.item())
        self.assertLessEqual(d_near.item(), 0.1 + 1e-6)  # oscillates around x within one step

    def test_seed_determinism_and_noise_effect(self):
        cfg = dict(eps=0.2, num_steps=3, gamma=50.0, seed=7)
        a = PSGBoundarySearch(self.ref, PSGConfig(**cfg))(self.x, self.y).boundary_input
        b = PSGBoundarySearch(self.ref, PSGConfig(**cfg))(self.x, self.y).boundary_input
        c = PSGBoundarySearch(self.ref, PSGConfig(**{**cfg, "seed": 8}))(self.x, self.y).boundary_input
        self.assertTrue(torch.equal(a, b))
        self.assertFalse(torch.equal(a, c))

    def test_early_stop_freezes_flipped_samples(self):
        # a reference that never predicts the true label: early stop must keep every sample at x
        y_wrong = (self.ref(self.x).argmax(1) + 1) % 3
        search = PSGBoundarySearch(self.ref, PSGConfig(eps=0.3, num_steps=4, early_stop=True))
        found = search(self.x, y_wrong)
        self.assertTrue(torch.equal(found.boundary_input, self.x))
        moved = PSGBoundarySearch(self.ref, PSGConfig(eps=0.3, num_steps=4))(self.x, y_wrong).boundary_input
        self.assertFalse(torch.equal(moved, self.x))

    def test_batch_size_independent(self):
        search = PSGBoundarySearch(self.ref, PSGConfig(eps=0.1, num_steps=2, lam=0.5, value_range=None))
        whole = search(self.x, self.y).boundary_input
        single = search(self.x[:1], self.y[:1]).boundary_input
        self.assertTrue(torch.allclose(whole[:1], single, atol=1e-6))

    def test_normalized_gradient_keeps_noise_relative(self):
        # a very confident reference has tiny input gradients: unnormalised, gamma=0.5 noise drowns them
        confident = frozen_reference(tiny_classifier())
        with torch.no_grad():
            confident[-1].weight.mul_(1e-6)
        grad_sign = torch.zeros_like(self.x)
        x = self.x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(confident(x), self.y, reduction="sum").backward()
        grad_sign = x.grad.sign()
        agreement = {}
        for normalize in (True, False):
            cfg = PSGConfig(eps=0.1, gamma=0.5, seed=0, value_range=None, normalize_gradient=normalize)
            step = PSGBoundarySearch(confident, cfg)(self.x, self.y).boundary_input - self.x
            agreement[normalize] = (step.sign() == grad_sign).float().mean().item()
        self.assertGreater(agreement[True], 0.75)
        self.assertLess(agreement[False], 0.6)

    @parameterized.expand([(2,), (3,)])
    def test_segmentation_mask(self, dims):
        ref = frozen_reference(tiny_segmenter(dims))
        shape = (2, 1) + (8,) * dims
        x = torch.rand(shape)
        y = torch.randint(0, 3, (2,) + (8,) * dims)
        search = PSGBoundarySearch(ref, PSGConfig(eps=0.1, num_steps=2))
        nothing = torch.zeros_like(y, dtype=torch.bool)
        found = search(x, y, mask=nothing)
        self.assertTrue(torch.equal(found.boundary_input, x))  # zero loss, zero gradient, sign 0
        found = search(x, y, mask=y == 1)
        self.assertEqual(found.boundary_logits.shape, (2, 3) + (8,) * dims)
        self.assertFalse(torch.equal(found.boundary_input, x))


class TestConfig(unittest.TestCase):
    @parameterized.expand(
        [
            ({"eps": 0}, "eps must be positive"),
            ({"eps": 2.0, "eps_mode": "relative"}, "relative eps"),
            ({"eps_mode": "percent"}, "eps_mode"),
            ({"num_steps": 0}, "num_steps"),
            ({"step_size": -1.0}, "step_size"),
            ({"gamma": -0.1}, "gamma"),
            ({"lam": -1}, "lam"),
            ({"phi": -1}, "phi"),
            ({"withdrawn_weight": -0.5}, "withdrawn_weight"),
            ({"noise": "gumbel"}, "noise"),
            ({"target": "argmax"}, "target"),
            ({"remain_loss": "mse"}, "remain_loss"),
            ({"temperature": 0}, "temperature"),
            ({"top_k": 0}, "top_k"),
            ({"value_range": (1.0, 0.0)}, "low must be below high"),
            ({"value_range": "image"}, "value_range"),
            ({"lambda_schedule": "cosine"}, "lambda_schedule"),
        ]
    )
    def test_bad_parameters(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            PSGConfig(**kwargs)

    def test_boundary_shrink_preset_and_dict(self):
        cfg = PSGConfig.boundary_shrink(eps=0.2)
        self.assertEqual((cfg.num_steps, cfg.gamma, cfg.lam, cfg.phi, cfg.first_step_size), (1, 0.0, 0.0, 0.0, 0.2))
        as_dict = PSGConfig(value_range=(0, 1)).to_dict()
        self.assertEqual(as_dict["value_range"], [0.0, 1.0])
        self.assertEqual(PSGConfig(**as_dict), PSGConfig(value_range=(0, 1)))


if __name__ == "__main__":
    unittest.main()
