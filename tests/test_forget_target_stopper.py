from __future__ import annotations

import unittest

import torch
from ignite.engine import Engine, Events
from parameterized import parameterized

from monai_unlearn.core import PSGConfig
from monai_unlearn.handlers import ForgetTargetStopper, UnlearningMetricsHandler
from tests.test_unlearning_trainer import make_trainer, toy_loaders, trained_toy_net


def fake_metric_engine(values: list[float], metric_name: str = "forget_accuracy") -> Engine:
    """An ignite engine whose epoch ``k`` writes ``values[k - 1]`` into its metrics."""
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _write(e):
        e.state.metrics[metric_name] = values[e.state.epoch - 1]

    return engine


class TestForgetTargetStopper(unittest.TestCase):
    def setUp(self):
        torch.set_num_threads(1)

    @parameterized.expand(
        [
            ("min", [0.9, 0.6, 0.3, 0.1, 0.0], 0.3, "min", 3),
            ("min_exact_never", [0.9, 0.8, 0.7, 0.6, 0.5], 0.3, "min", 5),
            ("max", [0.1, 0.4, 0.55, 0.7, 0.9], 0.5, "max", 3),
        ]
    )
    def test_fake_metric(self, _, values, target, mode, epochs_run):
        engine = fake_metric_engine(values)
        stopper = ForgetTargetStopper(target, mode=mode)
        stopper.attach(engine)
        stopper.attach(engine)  # idempotent
        engine.run([0, 1], max_epochs=len(values))
        self.assertEqual(engine.state.epoch, epochs_run)
        self.assertEqual(stopper.stopped_epoch, epochs_run if epochs_run < len(values) else None)

    def test_budget_and_missing_metric(self):
        engine = fake_metric_engine([0.9] * 10, metric_name="other")
        stopper = ForgetTargetStopper(0.1, max_epochs=2)
        stopper.attach(engine)
        engine.run([0, 1], max_epochs=10)
        self.assertEqual(engine.state.epoch, 2)
        self.assertEqual(stopper.reason, "budget")

    def test_stops_unlearning_early(self):
        forget, remain, _ = toy_loaders()
        metrics = UnlearningMetricsHandler(forget)
        stopper = ForgetTargetStopper(0.25)
        # attach order matters: the metrics handler writes forget_accuracy before the stopper reads it
        trainer = make_trainer(trained_toy_net(), forget, remain, PSGConfig(eps=3.0, value_range=None),
                               max_epochs=30, train_handlers=[metrics, stopper])
        trainer.run()
        self.assertEqual(stopper.reason, "target")
        self.assertLess(trainer.state.epoch, 30)
        self.assertEqual(stopper.stopped_epoch, trainer.state.epoch)
        self.assertLessEqual(trainer.state.metrics["forget_accuracy"], 0.25)
        self.assertGreater(metrics.history[-2]["forget_accuracy"], 0.25)  # the epoch before had not reached it
        self.assertEqual(metrics.history[-1]["iteration"], trainer.state.iteration)

    def test_invalid(self):
        with self.assertRaisesRegex(ValueError, "mode"):
            ForgetTargetStopper(0.1, mode="below")
        with self.assertRaisesRegex(ValueError, "max_epochs"):
            ForgetTargetStopper(0.1, max_epochs=0)


if __name__ == "__main__":
    unittest.main()
