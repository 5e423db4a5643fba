from __future__ import annotations

import logging
import unittest

import torch
from ignite.engine import Events
from parameterized import parameterized

from monai_unlearn.core import PSGConfig
from monai_unlearn.handlers import UnlearningMetricsHandler
from tests.test_unlearning_trainer import make_trainer, toy_loaders, trained_toy_net


class TestUnlearningMetricsHandler(unittest.TestCase):
    def setUp(self):
        torch.set_num_threads(1)
        self.forget, self.remain, self.test = toy_loaders()
        self.config = PSGConfig(eps=3.0, value_range=None, phi=1.0)

    def test_before_during_after(self):
        handler = UnlearningMetricsHandler(self.forget, self.remain, self.test, num_classes=2, name="test_metrics")
        trainer = make_trainer(trained_toy_net(), self.forget, self.remain, self.config, max_epochs=3,
                               train_handlers=[handler])
        logging.getLogger("test_metrics").setLevel(logging.INFO)
        with self.assertLogs("test_metrics", level="INFO") as logs:
            trainer.run()
        # STARTED + 3 epochs; COMPLETED adds nothing since the last epoch was just evaluated
        self.assertEqual([h["iteration"] for h in handler.history], [0, 4, 8, 12])
        self.assertEqual([h["epoch"] for h in handler.history], [0, 1, 2, 3])
        self.assertEqual(len(logs.output), 4)
        self.assertIn("forget_accuracy: 1.0000", logs.output[0])
        self.assertEqual(handler.before["forget"]["accuracy"], 1.0)
        self.assertLess(handler.latest["forget"]["accuracy"], 0.5)
        self.assertEqual(set(handler.latest["forget"]["per_class"]), {0, 1})
        for key in ("forget_accuracy", "remain_accuracy", "test_accuracy", "mia"):
            self.assertIn(key, trainer.state.metrics)
            self.assertEqual(trainer.state.metrics[key], handler.history[-1][key])
        self.assertTrue(0.0 <= trainer.state.metrics["mia"] <= 1.0)
        self.assertGreater(handler.evaluation_time_s, 0.0)

    @parameterized.expand(
        [
            ("epochs_interval_2", True, 2, 3, [0, 8, 12]),  # STARTED, epoch 2, COMPLETED (epoch 3)
            ("iterations_interval_3", False, 3, 1, [0, 3, 4]),  # STARTED, iteration 3, COMPLETED (iteration 4)
            ("iterations_interval_2", False, 2, 1, [0, 2, 4]),  # the final evaluation is not repeated
        ]
    )
    def test_interval(self, _, epoch_level, interval, epochs, expected):
        handler = UnlearningMetricsHandler(self.forget, interval=interval, epoch_level=epoch_level)
        trainer = make_trainer(trained_toy_net(), self.forget, self.remain, self.config, max_epochs=epochs)
        handler.attach(trainer)
        handler.attach(trainer)  # idempotent
        trainer.run()
        self.assertEqual([h["iteration"] for h in handler.history], expected)
        self.assertEqual(set(trainer.state.metrics), {"forget_accuracy"})
        self.assertIsNone(handler.history[-1]["remain_accuracy"])
        self.assertIsNone(handler.history[-1]["mia"])

    def test_mia_off_and_engine_logger(self):
        handler = UnlearningMetricsHandler(self.forget, self.remain, self.test, mia=False)
        trainer = make_trainer(trained_toy_net(), self.forget, self.remain, self.config, train_handlers=[handler])
        trainer.logger.setLevel(logging.INFO)
        with self.assertLogs(trainer.logger, level="INFO") as logs:
            trainer.run()
        self.assertTrue(any("Unlearning evaluation" in line for line in logs.output))
        self.assertIsNone(handler.latest["mia"])
        self.assertNotIn("mia", trainer.state.metrics)
        self.assertIn("test_accuracy", trainer.state.metrics)

    def test_network_mode_restored(self):
        net = trained_toy_net()
        handler = UnlearningMetricsHandler(self.forget)
        trainer = make_trainer(net, self.forget, self.remain, self.config, train_handlers=[handler])
        net.train()
        modes = []
        trainer.add_event_handler(Events.STARTED, lambda e: modes.append(e.network.training))
        trainer.run()
        self.assertEqual(modes, [True])

    def test_invalid_interval(self):
        with self.assertRaisesRegex(ValueError, "interval"):
            UnlearningMetricsHandler(self.forget, interval=0)


if __name__ == "__main__":
    unittest.main()
