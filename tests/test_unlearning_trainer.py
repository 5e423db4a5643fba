from __future__ import annotations

import copy
import logging
import unittest

import torch
from ignite.engine import Events
from monai.engines import IterationEvents
from monai.handlers import StatsHandler, from_engine
from monai.utils.enums import CommonKeys as Keys
from parameterized import parameterized
from torch.utils.data import DataLoader, TensorDataset

from monai_unlearn.core import PSGConfig, PSGUnlearner
from monai_unlearn.engines import UnlearningTrainer
from monai_unlearn.metrics.evaluation import evaluate_unlearning
from monai_unlearn.core.batch import cycle

_TRAINED: dict[int, torch.nn.Module] = {}


def toy_data(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two separable classes: images ``(n, 1, 4)`` around -1.5 (class 0) and +1.5 (class 1)."""
    generator = torch.Generator().manual_seed(seed)
    label = torch.arange(n) % 2
    image = torch.randn(n, 1, 4, generator=generator) * 0.5 + (label.float() * 3.0 - 1.5)[:, None, None]
    return image, label


def toy_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def trained_toy_net(seed: int = 0) -> torch.nn.Module:
    """A tiny classifier trained to (near) perfect accuracy on ``toy_data``; a fresh copy on every call."""
    if seed not in _TRAINED:
        net = toy_net(seed)
        image, label = toy_data(64, seed=100 + seed)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
        for _ in range(60):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(image), label).backward()
            optimizer.step()
        _TRAINED[seed] = net
    return copy.deepcopy(_TRAINED[seed])


def toy_loaders(batch_size: int = 4, n: int = 32, seed: int = 0, as_dict: bool = False):
    """Forget loader (class 1), remain loader (class 0) and test loader (both classes), unshuffled."""
    image, label = toy_data(n, seed)
    test_image, test_label = toy_data(n, seed + 50)

    def loader(x, y):
        if as_dict:
            return [{"image": x[i : i + batch_size], "label": y[i : i + batch_size]} for i in range(0, len(x), batch_size)]
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)

    forget = label == 1
    return (
        loader(image[forget], label[forget]),
        loader(image[~forget][: n // 4], label[~forget][: n // 4]),  # shorter than the forget loader: cycled
        loader(test_image, test_label),
    )


def make_trainer(net, forget, remain=None, config=None, max_epochs=1, lr=0.1, **kwargs) -> UnlearningTrainer:
    return UnlearningTrainer(
        device="cpu",
        max_epochs=max_epochs,
        forget_data_loader=forget,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9),
        config=config,
        remain_data_loader=remain,
        **kwargs,
    )


class TestUnlearningTrainer(unittest.TestCase):
    def setUp(self):
        torch.set_num_threads(1)
        self.forget, self.remain, self.test = toy_loaders()

    @parameterized.expand(
        [
            ("boundary_shrink", PSGConfig(eps=2.0, phi=0.0), 1),
            ("psg_remain_soft", PSGConfig(eps=1.0, num_steps=3, gamma=0.5, lam=0.2, lambda_schedule="linear",
                                          target="soft", phi=1.0, seed=3), 2),
            ("distill", PSGConfig(eps=1.0, num_steps=2, phi=0.5, remain_loss="distill"), 2),
        ]
    )
    def test_equals_unlearner_steps_by_hand(self, _, config, epochs):
        net = trained_toy_net()
        by_hand = copy.deepcopy(net)
        trainer = make_trainer(net, self.forget, self.remain, copy.deepcopy(config), max_epochs=epochs)
        trainer.run()

        unlearner = PSGUnlearner(
            by_hand, torch.optim.SGD(by_hand.parameters(), lr=0.1, momentum=0.9), copy.deepcopy(config),
            total_iterations=epochs * len(self.forget),
        )
        for _ in range(epochs):
            remain_iter = cycle(self.remain)  # a fresh remain pass with every forget pass, restarted when it runs out
            for xf, yf in self.forget:
                xr, yr = next(remain_iter) if config.phi > 0 else (None, None)
                unlearner.step(xf, yf, xr, yr)
        self.assertEqual(trainer.unlearner.iteration, unlearner.iteration)
        self.assertEqual(trainer.state.iteration, epochs * len(self.forget))
        for got, want in zip(net.parameters(), by_hand.parameters()):
            self.assertTrue(torch.equal(got, want))
        # the reference stays the original model
        for got, want in zip(trainer.reference.parameters(), trained_toy_net().parameters()):
            self.assertTrue(torch.equal(got, want))

    def test_iteration_events_in_order(self):
        trainer = make_trainer(trained_toy_net(), self.forget, self.remain, PSGConfig(eps=1.0), max_epochs=2)
        seen: list[str] = []
        for event in (IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED,
                      IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED):
            trainer.add_event_handler(event, lambda engine, name=event.name: seen.append(name))
        keys_at_forward: list[set] = []
        trainer.add_event_handler(
            IterationEvents.FORWARD_COMPLETED, lambda engine: keys_at_forward.append(set(engine.state.output))
        )
        trainer.run()
        per_iteration = ["FORWARD_COMPLETED", "LOSS_COMPLETED", "BACKWARD_COMPLETED", "MODEL_COMPLETED"]
        self.assertEqual(seen, per_iteration * (2 * len(self.forget)))
        self.assertIn(Keys.PRED, keys_at_forward[0])
        self.assertNotIn(Keys.LOSS, keys_at_forward[0])

    def test_output_detached_without_decollate(self):
        trainer = make_trainer(trained_toy_net(), self.forget, self.remain, PSGConfig(eps=1.0), decollate=False)
        trainer.run()
        out = trainer.state.output
        for key in (Keys.IMAGE, Keys.LABEL, Keys.PRED, Keys.LOSS, "forget_loss", "remain_loss", "flip_rate",
                    "boundary_target"):
            self.assertIn(key, out)
            self.assertFalse(out[key].requires_grad, key)
        self.assertEqual(out[Keys.PRED].shape, (4, 2))
        self.assertEqual(out["boundary_target"].shape, (4,))
        self.assertAlmostEqual(float(out[Keys.LOSS]), float(out["forget_loss"] + out["remain_loss"]), places=5)

    def test_stats_handler_and_decollate(self):
        stats = StatsHandler(name="test_unlearning_trainer", output_transform=from_engine(["loss"], first=True),
                             iteration_log=True, epoch_log=False)
        trainer = make_trainer(trained_toy_net(), self.forget, self.remain, PSGConfig(eps=1.0), train_handlers=[stats])
        logging.getLogger("test_unlearning_trainer").setLevel(logging.INFO)
        with self.assertLogs("test_unlearning_trainer", level="INFO") as logs:
            trainer.run()
        self.assertEqual(len([line for line in logs.output if "Loss" in line]), len(self.forget))
        self.assertIsInstance(trainer.state.output, list)  # decollated
        self.assertEqual(len(trainer.state.output), 4)
        self.assertIn("flip_rate", trainer.state.output[0])

    def test_dict_batches_and_dict_config(self):
        forget, remain, _ = toy_loaders(as_dict=True)
        trainer = make_trainer(trained_toy_net(), forget, remain, {"eps": 2.0, "phi": 1.0}, max_epochs=3)
        self.assertEqual(trainer.unlearner.total_iterations, 3 * len(forget))
        trainer.run()
        self.assertEqual(trainer.state.unlearning_config["eps"], 2.0)
        self.assertEqual(trainer.state.iteration, 3 * len(forget))

    def test_forget_accuracy_drops(self):
        net = trained_toy_net()
        before = evaluate_unlearning(net, self.forget, self.remain)
        self.assertGreaterEqual(before["forget"]["accuracy"], 0.99)
        make_trainer(net, self.forget, self.remain, PSGConfig(eps=3.0, value_range=None), max_epochs=5).run()
        after = evaluate_unlearning(net, self.forget, self.remain)
        self.assertLessEqual(after["forget"]["accuracy"], 0.25)
        self.assertGreaterEqual(after["remain"]["accuracy"], 0.99)

    def test_prepare_batch_tuple_forms(self):
        def four(batchdata, device=None, non_blocking=False, **kwargs):
            return batchdata[0].to(device), batchdata[1].to(device), (), {}

        trainer = make_trainer(trained_toy_net(), self.forget, self.remain, PSGConfig(eps=1.0), prepare_batch=four)
        trainer.run()
        self.assertEqual(trainer.state.iteration, len(self.forget))

        def with_args(batchdata, device=None, non_blocking=False, **kwargs):
            return batchdata[0], batchdata[1], (1,), {}

        trainer = make_trainer(trained_toy_net(), self.forget, self.remain, PSGConfig(eps=1.0), prepare_batch=with_args)
        with self.assertRaisesRegex(ValueError, "extra network arguments"):
            trainer.run()

    def test_bad_labels(self):
        image, _ = toy_data(8)
        bad = DataLoader(TensorDataset(image, torch.full((8,), 5)), batch_size=4)
        trainer = make_trainer(trained_toy_net(), bad, None, PSGConfig(phi=0.0))
        with self.assertRaisesRegex(ValueError, r"forget labels range from 5 to 5, but the network predicts 2"):
            trainer.run()
        trainer = make_trainer(trained_toy_net(), self.forget, None, PSGConfig(phi=0.0), withdrawn_classes=[5])
        with self.assertRaisesRegex(ValueError, r"cannot forget class\(es\) \[5\]: the network outputs 2 classes"):
            trainer.run()
        bad_remain = DataLoader(TensorDataset(image, torch.full((8,), -1)), batch_size=4)
        trainer = make_trainer(trained_toy_net(), self.forget, bad_remain, PSGConfig(phi=1.0))
        with self.assertRaisesRegex(ValueError, "remain labels"):
            trainer.run()

    def test_invalid_construction(self):
        with self.assertRaisesRegex(ValueError, "remain_data_loader"):
            make_trainer(trained_toy_net(), self.forget, None, PSGConfig(phi=1.0))
        with self.assertRaisesRegex(ValueError, "eps must be positive"):
            make_trainer(trained_toy_net(), self.forget, None, {"eps": -1.0, "phi": 0.0})
        with self.assertRaises(TypeError):
            make_trainer(trained_toy_net(), self.forget, None, 3)

    def test_bundle_config_target(self):
        from monai.bundle import ConfigParser

        parser = ConfigParser(
            {
                "forget": "$@forget_loader",
                "network": "$@net",
                "trainer": {
                    "_target_": "monai_unlearn.engines.UnlearningTrainer",
                    "device": "cpu",
                    "max_epochs": 2,
                    "forget_data_loader": "@forget",
                    "network": "@network",
                    "optimizer": {"_target_": "torch.optim.SGD", "params": "$@network.parameters()", "lr": 0.1},
                    "config": {"eps": 2.0, "phi": 0.0},
                    "train_handlers": [
                        {"_target_": "monai_unlearn.handlers.UnlearningMetricsHandler", "forget_data_loader": "@forget"}
                    ],
                },
            }
        )
        parser["forget_loader"] = self.forget
        parser["net"] = trained_toy_net()
        trainer = parser.get_parsed_content("trainer")
        self.assertIsInstance(trainer, UnlearningTrainer)
        trainer.run()
        self.assertEqual(trainer.state.iteration, 2 * len(self.forget))
        self.assertIn("forget_accuracy", trainer.state.metrics)

    def test_segmentation_mask(self):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 3, 1))
        image = torch.rand(4, 1, 6, 6)
        label = torch.randint(0, 3, (4, 1, 6, 6))
        loader = [{"image": image[:2], "label": label[:2]}, {"image": image[2:], "label": label[2:]}]
        trainer = make_trainer(net, loader, None, PSGConfig(eps=0.3, phi=0.0), decollate=False,
                               forget_mask_fn=lambda img, lbl: lbl[:, 0] == 2)
        targets = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: targets.append(e.state.output["boundary_target"]))
        trainer.run()
        keep = label[2:, 0] != 2
        self.assertTrue(torch.equal(targets[-1][keep], label[2:, 0][keep]))


if __name__ == "__main__":
    unittest.main()
