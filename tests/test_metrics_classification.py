from __future__ import annotations

import unittest

import torch
from parameterized import parameterized
from torch.utils.data import DataLoader, Dataset

from monai_unlearn.metrics import accuracy_report, collect_outputs, evaluate_classifier, per_sample_loss


class DictDataset(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i]}


def make_linear() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    """A 2-feature, 3-class linear model whose prediction is the index of the largest of (x0, x1, 0)."""
    model = torch.nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        model.bias.zero_()
    images = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-1.0, -1.0], [3.0, 1.0], [1.0, 3.0], [-2.0, -3.0], [5.0, 0.0]])
    labels = torch.tensor([0, 1, 2, 1, 1, 2, 0])  # sample 3 is misclassified (predicted 0)
    return model, images, labels


class TestAccuracyReport(unittest.TestCase):
    def test_hand_computed(self):
        logits = torch.tensor(
            [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
        )  # predictions 0, 1, 1, 0, 2
        labels = torch.tensor([0, 1, 0, 0, 1])
        report = accuracy_report(logits, labels, num_classes=3)
        self.assertAlmostEqual(report["accuracy"], 3 / 5)
        self.assertEqual(report["count"], 5)
        self.assertAlmostEqual(report["per_class"][0], 2 / 3)
        self.assertAlmostEqual(report["per_class"][1], 1 / 2)
        self.assertIsNone(report["per_class"][2])
        self.assertEqual(report["class_counts"], {0: 3, 1: 2, 2: 0})

    def test_label_layouts_agree(self):
        logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
        labels = torch.tensor([0, 1, 2, 2, 1, 0])
        base = accuracy_report(logits, labels)
        self.assertEqual(accuracy_report(logits, labels[:, None]), base)
        self.assertEqual(accuracy_report(logits, torch.nn.functional.one_hot(labels, 3).float()), base)

    def test_segmentation_voxels(self):
        logits = torch.zeros(1, 2, 2, 2)
        logits[0, 1, 0, :] = 1.0  # predict class 1 on the top row
        labels = torch.tensor([[[1, 0], [0, 0]]])
        report = accuracy_report(logits, labels)
        self.assertAlmostEqual(report["accuracy"], 3 / 4)
        self.assertAlmostEqual(report["per_class"][0], 2 / 3)
        self.assertAlmostEqual(report["per_class"][1], 1.0)
        self.assertEqual(report["count"], 1)

    @parameterized.expand(
        [
            ("empty", torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), None, "non-empty"),
            ("channels", torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 4, "num_classes=4"),
            ("range", torch.zeros(2, 3), torch.tensor([0, 5]), None, r"0\.\.2"),
            ("shape", torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), None, "do not match"),
        ]
    )
    def test_errors(self, _, logits, labels, num_classes, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            accuracy_report(logits, labels, num_classes)


class TestPerSampleLoss(unittest.TestCase):
    def test_classification(self):
        logits = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
        loss = per_sample_loss(logits, torch.tensor([1, 0]))
        self.assertEqual(loss.shape, (2,))
        self.assertAlmostEqual(loss[0].item(), torch.log(torch.tensor(2.0)).item(), places=6)
        self.assertLess(loss[1].item(), 1e-4)

    def test_segmentation_mean_over_voxels(self):
        logits = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(1))
        labels = torch.randint(0, 4, (3, 1, 5, 6), generator=torch.Generator().manual_seed(2))
        loss = per_sample_loss(logits, labels)
        expected = torch.nn.functional.cross_entropy(logits, labels[:, 0], reduction="none").mean(dim=(1, 2))
        self.assertEqual(loss.shape, (3,))
        self.assertTrue(torch.allclose(loss, expected))

    def test_error(self):
        with self.assertRaises(ValueError):
            per_sample_loss(torch.zeros(3), torch.zeros(3, dtype=torch.long))


class TestCollectAndEvaluate(unittest.TestCase):
    @parameterized.expand([(True,), (False,)])
    def test_evaluate_dict_loader_and_mode_restored(self, training):
        model, images, labels = make_linear()
        model.train(training)
        loader = DataLoader(DictDataset(images, labels), batch_size=3)
        report = evaluate_classifier(model, loader, num_classes=3)
        self.assertEqual(model.training, training)
        self.assertAlmostEqual(report["accuracy"], 6 / 7)
        self.assertEqual(report["count"], 7)
        self.assertAlmostEqual(report["per_class"][1], 2 / 3)
        self.assertEqual(report["per_class"][0], 1.0)
        self.assertEqual(report["per_class"][2], 1.0)
        expected = torch.nn.functional.cross_entropy(model(images), labels).item()
        self.assertAlmostEqual(report["mean_loss"], expected, places=5)

    def test_collect_tuple_batches_and_no_grad(self):
        model, images, labels = make_linear()
        batches = [(images[:4], labels[:4]), (images[4:], labels[4:])]
        logits, got = collect_outputs(model, batches)
        self.assertEqual(logits.shape, (7, 3))
        self.assertFalse(logits.requires_grad)
        self.assertEqual(logits.device.type, "cpu")
        self.assertTrue(torch.equal(got, labels))
        self.assertTrue(torch.allclose(logits, model(images).detach()))

    def test_eval_mode_used(self):
        model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Dropout(p=0.9))
        model.train()
        images = torch.ones(50, 2)
        a, _ = collect_outputs(model, [(images, torch.zeros(50, dtype=torch.long))])
        self.assertTrue(torch.allclose(a, a[:1].expand_as(a)))  # no dropout noise
        self.assertTrue(model.training)

    def test_mode_restored_on_error(self):
        model, _, _ = make_linear()
        model.train()
        with self.assertRaises(Exception):
            collect_outputs(model, [{"image": torch.zeros(2, 5), "label": torch.zeros(2)}])
        self.assertTrue(model.training)

    def test_tuple_output_and_amp(self):
        class TwoHeads(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(2, 3)

            def forward(self, x):
                out = self.fc(x)
                return out, out * 2

        model = TwoHeads()
        x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
        logits, _ = collect_outputs(model, [(x, y)], amp=True)
        self.assertEqual(logits.dtype, torch.float32)
        self.assertTrue(torch.allclose(logits, model.fc(x).detach(), atol=0.1))

    def test_custom_prepare_batch(self):
        model, images, labels = make_linear()

        def prepare(batch, device, non_blocking):
            return batch["x"].to(device), batch["y"].to(device)

        logits, got = collect_outputs(model, [{"x": images, "y": labels}], device="cpu", prepare_batch=prepare)
        self.assertEqual(logits.shape, (7, 3))

    def test_empty_loader(self):
        model, _, _ = make_linear()
        with self.assertRaisesRegex(ValueError, "no batches"):
            evaluate_classifier(model, [], num_classes=3)


if __name__ == "__main__":
    unittest.main()
