"""End to end on real data (scikit-learn's handwritten digits): train, unlearn one class, compare to retraining."""

from __future__ import annotations

import copy
import unittest

import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from monai_unlearn import PSGConfig, unlearn

FORGET_CLASS = 3


def small_cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 10),
    )


def train(images, labels, epochs: int = 30) -> torch.nn.Module:
    torch.manual_seed(0)
    model = small_cnn()
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    loader = DataLoader(TensorDataset(images, labels), batch_size=64, shuffle=True)
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model


class DigitsCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.manual_seed(0)
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(digits.target)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        train_idx, test_idx = order[:1400], order[1400:]
        forget_idx = train_idx[labels[train_idx] == FORGET_CLASS]
        remain_idx = train_idx[labels[train_idx] != FORGET_CLASS]
        cls.original = train(images[train_idx], labels[train_idx])
        cls.retrained = train(images[remain_idx], labels[remain_idx])

        def loader(idx, shuffle):
            generator = torch.Generator().manual_seed(1)
            return DataLoader(TensorDataset(images[idx], labels[idx]), 32, shuffle=shuffle, generator=generator)

        cls.forget_loader = loader(forget_idx, True)
        cls.remain_loader = loader(remain_idx, True)
        cls.test_loader = loader(test_idx, False)
        cls.images, cls.labels = images, labels


class TestUnlearnDigits(DigitsCase):
    def test_forgets_one_class_and_keeps_the_rest(self):
        weights = copy.deepcopy(self.original.state_dict())
        config = PSGConfig(eps=0.3, value_range=(0.0, 1.0), phi=4.0, seed=0)
        torch.manual_seed(0)  # the remain loader shuffles with the global generator
        revised, result = unlearn(
            self.original, self.forget_loader, self.remain_loader, config=config, epochs=30, lr=0.001,
            test_loader=self.test_loader, retrained_model=self.retrained, num_classes=10, progress=False,
        )
        before, after, retrained = result.before, result.after, result.retrained
        self.assertGreater(before["forget"]["accuracy"], 0.9)
        self.assertLess(after["forget"]["accuracy"], 0.2)
        self.assertGreater(after["remain"]["accuracy"], before["remain"]["accuracy"] - 0.05)
        self.assertLess(abs(after["remain"]["accuracy"] - retrained["remain"]["accuracy"]), 0.05)
        self.assertLess(retrained["forget"]["accuracy"], 0.05)
        self.assertLess(after["test"]["per_class"][FORGET_CLASS], 0.2)
        self.assertLess(result.retrain_gap["remain_acc"], 0.05)
        self.assertEqual(result.method, "PSG")
        # the default decides the regime (the class is withdrawn: no kept image has its label) and stops once the
        # class is gone and held-out accuracy no longer improves, well inside the 30-pass budget
        self.assertEqual(result.stopping["regime"]["regime"], "class")
        self.assertEqual(result.stopping["calibration"]["target"], 0.0)
        self.assertLess(result.epochs, 30)
        self.assertIsNotNone(result.stopping["reached_at"])
        self.assertEqual(result.iterations, result.epochs * len(self.forget_loader))
        self.assertEqual(len(result.history), result.epochs)
        self.assertGreater(result.time_s, 0.0)
        self.assertIsNotNone(after["mia"])
        # the original model is left untouched
        for name, value in self.original.state_dict().items():
            self.assertTrue(torch.equal(value, weights[name]))
        self.assertFalse(torch.equal(revised.state_dict()["7.weight"], weights["7.weight"]))
        self.assertIn("forget_acc", result.table())

    def test_boundary_shrink_preset_and_early_stop(self):
        config = PSGConfig.boundary_shrink(eps=0.3, value_range=(0.0, 1.0))
        _, result = unlearn(
            self.original, self.forget_loader, config=config, epochs=10, lr=0.01, num_classes=10,
            stop_at_forget_accuracy=0.5, progress=False,
        )
        self.assertEqual(result.method, "Boundary Shrink")
        self.assertLess(result.epochs, 10)
        self.assertLessEqual(result.history[-1]["forget_accuracy"], 0.5)
        self.assertIsNone(result.after["remain"])

    def test_deterministic_under_seed(self):
        config = PSGConfig(eps=0.3, gamma=0.5, lam=0.1, phi=1.0, seed=3)
        states = []
        for _ in range(2):
            torch.manual_seed(5)
            forget = DataLoader(self.forget_loader.dataset, 32, shuffle=True, generator=torch.Generator().manual_seed(2))
            remain = DataLoader(self.remain_loader.dataset, 32, shuffle=True, generator=torch.Generator().manual_seed(2))
            revised, _ = unlearn(self.original, forget, remain, config=config, epochs=2, evaluate=False, progress=False,
                                 regime="fixed")
            states.append(revised.state_dict())
        for name in states[0]:
            self.assertTrue(torch.equal(states[0][name], states[1][name]))


    def test_channels_last_gives_the_same_weights(self):
        config = PSGConfig(eps=0.3, phi=1.0, seed=3)
        states = []
        for channels_last in (False, True):
            forget = DataLoader(self.forget_loader.dataset, 32, shuffle=True, generator=torch.Generator().manual_seed(2))
            remain = DataLoader(self.remain_loader.dataset, 32, shuffle=True, generator=torch.Generator().manual_seed(2))
            revised, _ = unlearn(self.original, forget, remain, config=config, epochs=2, evaluate=False, progress=False,
                                 channels_last=channels_last, regime="fixed")
            states.append(revised.state_dict())
        conv = next(n for n, v in states[1].items() if v.ndim == 4)
        self.assertTrue(states[1][conv].is_contiguous(memory_format=torch.channels_last))
        for name in states[0]:
            self.assertTrue(torch.allclose(states[0][name], states[1][name], atol=1e-4), name)


class TestUnlearnBadInput(DigitsCase):
    def test_empty_forget_loader(self):
        empty = DataLoader(TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)), 4)
        with self.assertRaisesRegex(ValueError, "forget loader is empty"):
            unlearn(self.original, empty, config=PSGConfig(phi=0.0), progress=False)

    def test_labels_out_of_range(self):
        bad = DataLoader(TensorDataset(self.images[:8], torch.full((8,), 12)), 4)
        with self.assertRaisesRegex(ValueError, r"forget labels range from 12 to 12.*10 classes"):
            unlearn(self.original, bad, config=PSGConfig(phi=0.0), evaluate=False, progress=False)

    def test_wrong_image_shape(self):
        bad = DataLoader(TensorDataset(torch.zeros(8, 3, 8, 8), torch.zeros(8, dtype=torch.long)), 4)
        with self.assertRaisesRegex(ValueError, r"cannot process the forget images of shape \(4, 3, 8, 8\)"):
            unlearn(self.original, bad, config=PSGConfig(phi=0.0), evaluate=False, progress=False)

    def test_nan_images(self):
        images = self.images[:8].clone()
        images[1, 0, 2, 2] = float("nan")
        bad = DataLoader(TensorDataset(images, self.labels[:8]), 4)
        with self.assertRaisesRegex(ValueError, "forget images contain NaN or infinite values"):
            unlearn(self.original, bad, config=PSGConfig(phi=0.0), evaluate=False, progress=False)
        # a non-finite image in a later batch is caught at the end of the pass, before anything is returned
        images = self.images[:8].clone()
        images[6, 0, 0, 0] = float("inf")
        late = DataLoader(TensorDataset(images, self.labels[:8]), 4)
        with self.assertRaisesRegex(ValueError, "NaN or infinite values reached unlearning in pass 1"):
            unlearn(self.original, late, config=PSGConfig(phi=0.0), evaluate=False, progress=False)

    def test_phi_needs_remain(self):
        with self.assertRaisesRegex(ValueError, "remain_loader"):
            unlearn(self.original, self.forget_loader, config=PSGConfig(phi=1.0), progress=False)

    def test_optimizer_needs_inplace(self):
        optimizer = torch.optim.SGD(self.original.parameters(), lr=0.1)
        with self.assertRaisesRegex(ValueError, "inplace"):
            unlearn(self.original, self.forget_loader, config=PSGConfig(phi=0.0), optimizer=optimizer, progress=False)

    def test_bad_epochs(self):
        with self.assertRaisesRegex(ValueError, "epochs"):
            unlearn(self.original, self.forget_loader, config=PSGConfig(phi=0.0), epochs=0, progress=False)


if __name__ == "__main__":
    unittest.main()
