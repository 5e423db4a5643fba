from __future__ import annotations

import json
import os
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import torch
from monai.engines import SupervisedTrainer

from monai_unlearn.core import PSGConfig
from monai_unlearn.handlers import (
    PSGUnlearningHandler,
    UnlearningMetricsHandler,
    UnlearningReportHandler,
)
from monai_unlearn.io import atomic_write_bytes
from tests.test_unlearning_trainer import make_trainer, toy_loaders, trained_toy_net

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RECORD_KEYS = {
    "method", "config", "optimizer", "iterations", "epochs", "wall_time_s", "evaluation_time_s",
    "unlearning_time_s", "before", "after", "history", "extra",
}


class TestUnlearningReportHandler(unittest.TestCase):
    def setUp(self):
        torch.set_num_threads(1)
        self.forget, self.remain, self.test = toy_loaders()
        self.config = PSGConfig(eps=3.0, value_range=None, phi=1.0)

    def test_report_and_plots(self):
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "report"
            metrics = UnlearningMetricsHandler(self.forget, self.remain, self.test, num_classes=2)
            report = UnlearningReportHandler(out, metrics, extra={"forget": "label:1"})
            trainer = make_trainer(trained_toy_net(), self.forget, self.remain, self.config, max_epochs=2,
                                   train_handlers=[metrics, report])
            trainer.run()
            record = json.loads((out / "unlearning_report.json").read_text())
            self.assertEqual(set(record), RECORD_KEYS)
            self.assertEqual(record["method"], "PSG")
            self.assertEqual(record["config"]["eps"], 3.0)
            self.assertEqual(record["optimizer"]["name"], "SGD")
            self.assertEqual((record["iterations"], record["epochs"]), (8, 2))
            self.assertEqual(record["extra"], {"forget": "label:1"})
            self.assertEqual(record["before"]["forget"]["accuracy"], 1.0)
            self.assertLess(record["after"]["forget"]["accuracy"], 0.5)
            self.assertEqual(set(record["after"]["forget"]["per_class"]), {"0", "1"})
            self.assertEqual([h["epoch"] for h in record["history"]], [0, 1, 2])
            self.assertGreater(record["wall_time_s"], 0.0)
            self.assertAlmostEqual(record["wall_time_s"], record["evaluation_time_s"] + record["unlearning_time_s"])
            self.assertEqual(report.record["iterations"], 8)
            for name in ("unlearning_curves.png", "per_class_accuracy.png"):
                data = (out / name).read_bytes()
                self.assertGreater(len(data), 1000)
                self.assertTrue(data.startswith(PNG_SIGNATURE))
            self.assertEqual(sorted(os.listdir(out)), ["per_class_accuracy.png", "unlearning_curves.png",
                                                       "unlearning_report.json"])

    def test_attached_before_metrics_and_supervised_trainer(self):
        with tempfile.TemporaryDirectory() as folder:
            metrics = UnlearningMetricsHandler(self.forget, interval=5)
            report = UnlearningReportHandler(folder, metrics, filename="r.json", plot=False)
            net = trained_toy_net()
            trainer = SupervisedTrainer(
                device="cpu", max_epochs=2, train_data_loader=self.forget, network=net,
                optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=torch.nn.CrossEntropyLoss(),
                train_handlers=[report, PSGUnlearningHandler(PSGConfig.boundary_shrink(eps=3.0)), metrics],
            )
            trainer.run()
            record = json.loads((Path(folder) / "r.json").read_text())
            self.assertEqual(os.listdir(folder), ["r.json"])
            self.assertEqual(record["method"], "Boundary Shrink")
            # the report asked the metrics handler for the final evaluation; it was not repeated afterwards
            self.assertEqual([h["iteration"] for h in record["history"]], [0, 8])
            self.assertEqual([h["iteration"] for h in metrics.history], [0, 8])
            self.assertIsNotNone(record["after"])

    def test_atomic_write_leaves_no_temp_file(self):
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / "x.json"
            atomic_write_bytes(target, b"old")
            with mock.patch("os.replace", side_effect=OSError("disk full")):
                with self.assertRaisesRegex(OSError, "disk full"):
                    atomic_write_bytes(target, b"new")
            self.assertEqual(os.listdir(folder), ["x.json"])
            self.assertEqual(target.read_bytes(), b"old")

    def test_invalid(self):
        with self.assertRaisesRegex(TypeError, "UnlearningMetricsHandler"):
            UnlearningReportHandler("out", metrics_handler=None)  # type: ignore[arg-type]


if __name__ == "__main__":
    unittest.main()
